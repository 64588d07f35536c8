"""What the machines need from the outside world, as plain interfaces.

The orchestrator wires real implementations (engine port, movers, store,
catalog); unit tests wire fakes. Nothing here knows HTTP, SQL or the SDK
(the engine's port and values: `engine.py`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, Awaitable, Callable, Protocol

from .engine import Engine


class DataMover(Protocol):
    async def backup_disk(self, *, host_id: str, transfer_url: str, vm_id: str, backup_id: str,
                          disk_id: str, parent_backup_id: str | None, incremental: bool,
                          size: int, copy_id: str,
                          progress: Callable[[int, int], Awaitable[None]]) -> dict: ...

    async def restore_disk(self, *, host_id: str, transfer_url: str, vm_id: str, backup_id: str,
                           disk_id: str, size: int, copy_id: str,
                           progress: Callable[[int, int], Awaitable[None]],
                           index_sha256: str | None = None) -> dict: ...


class Catalog(Protocol):
    async def last_backup(self, vm_id: str, method: str | None) -> dict | None: ...
    async def backup_started(self, *, backup_id: str, vm_id: str, vm_name: str, mode: str,
                             method: str, parent_id: str | None, checkpoint_id: str | None,
                             fallback_reason: str | None, config: dict, disks: list[dict]) -> None: ...
    async def backup_succeeded(self, backup_id: str, *, checkpoint_id: str | None,
                               stats: dict, consistency: str = "crash") -> None: ...
    async def backup_failed(self, backup_id: str, error: str) -> None: ...
    async def get_backup(self, backup_id: str) -> dict: ...
    async def checkpoints(self, vm_id: str) -> dict[str, list[str]]:
        """The VM's engine checkpoints ovault made (``ours``: every backup row's
        checkpoint id) and those it still needs (``keep``: the checkpoint of the
        newest succeeded, undamaged backup on each target — where the next
        incremental to that target starts)."""


class Store(Protocol):
    async def publish(self, vm_id: str, backup_id: str, parent_id: str | None,
                      disks: list[dict], meta: dict) -> dict: ...
    async def discard(self, vm_id: str, backup_id: str) -> None: ...


@dataclass
class Timeouts:
    """Every wait of the machines, in seconds. The orchestrator's configuration
    has them as its `[timeouts]` section (orchestrator/config.py)."""
    snapshot: float = 600.0  # a snapshot to become ok, or to go away when removed
    engine_backup: float = 600.0  # an engine (CBT) backup to become ready, or to finish
    transfer: float = 120.0  # an image transfer to reach `transferring`
    transfer_end: float = 120.0  # a finalized or canceled image transfer to finish
    disk: float = 300.0  # a disk created for a restore to become ok
    poll: float = 1.0  # polling while waiting (engine events end a wait earlier)
    transfer_poll: float = 0.3  # polling an image transfer's phase


@dataclass
class Deps:
    engine: Engine  # orchestrator.engine.port.EnginePort, or a fake with the same methods
    mover: DataMover
    catalog: Catalog
    store: Store
    timeouts: Timeouts = field(default_factory=Timeouts)
    disks_per_vm: int = 2
    consistency: str = "prefer"  # [backup] consistency: prefer | require | crash (consistency.py)
    host_slot: Callable[[str], AsyncContextManager] = lambda host_id: contextlib.nullcontext()
    sd_slot: Callable[[str], AsyncContextManager] = lambda sd_id: contextlib.nullcontext()
    waker: Any = None  # orchestrator.engine.events.Waker: engine events end waits early
    # called with the machine kind ("backup", "restore") each time a disk's copy goes on
    # on a new image transfer (resume.py; a metric)
    on_resume: Callable[[str], None] | None = None
