"""Direct mode: run one copy in this process (no mover service needed).

The orchestrator calls `run_copy` itself for hosts without a mover; the mover
service calls the same function for each command it accepts.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from ..store import Store
from .backup import backup_disk
from .imageio import ImageioClient
from .progress import ProgressCallback
from .restore import restore_disk
from .result import CopyResult
from .spec import CopySpec

# How a copy opens its store: hashing and compression release the GIL, so one
# thread per core; chunk writes wait in fsync (or on the NFS server) far more than
# they work, so more I/O threads than the target's default let several copies'
# writes overlap instead of queueing behind each other's fsyncs.
STORE_OPTIONS = {"cpu_workers": os.cpu_count() or 1, "target_options": {"io_workers": 16}}


async def run_copy(
    spec: CopySpec | dict,
    *,
    store: Store | None = None,  # an open store for spec.store (reused); else opened and closed here
    local_socket: str | None = None,  # this host's imageio local socket (used when it serves the ticket)
    requests: int = 4,  # parallel HTTP requests to imageio
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
    imageio_ca: str | None = None,  # the mover's own imageio CA: replaces the spec's ca_file
    local_only: bool = False,  # the ticket must be served by local_socket (never over the network)
    control_socket: str | None = None,  # this host's imageio control socket: read/write its NBD export directly
) -> CopyResult:
    """Run one backup or restore copy to the end; raise an `OvaultError` on failure
    (a `CopyError`, a store error, `TargetFull`, ...).

    Cancel it by cancelling the task that awaits it.
    """
    if isinstance(spec, dict):
        spec = CopySpec.from_dict(spec)
    own_store = store is None
    if store is None:
        store = await Store.open(spec.store, **STORE_OPTIONS)
    try:
        ca = imageio_ca if imageio_ca is not None else spec.ca_file
        async with ImageioClient(spec.transfer_url, ca_file=ca, local_socket=local_socket,
                                 connections=requests, local_only=local_only,
                                 control_socket=control_socket) as client:
            if spec.op == "backup":
                return await backup_disk(
                    store, client, vm_id=spec.vm_id, backup_id=spec.backup_id, disk_id=spec.disk_id,
                    size=spec.size, parent_backup_id=spec.parent_backup_id, incremental=spec.incremental,
                    requests=client.connections, progress=progress, clock=clock, transport=client.transport)
            return await restore_disk(
                store, client, vm_id=spec.vm_id, backup_id=spec.backup_id, disk_id=spec.disk_id,
                size=spec.size, requests=client.connections, progress=progress, clock=clock,
                transport=client.transport, index_sha256=spec.index_sha256)
    finally:
        if own_store:
            await store.close()
