"""A real nfs-ganesha for the store's integration tests.

Ports 2049/111 allow one NFS server per machine, and tests/conftest.py's
session `sandbox` runs one too. So:

- if this test session's sandbox already serves NFS (the lock holder is a
  descendant of this process), its export is reused (`nfs_target`), and
  the tests that stop or restart the server skip;
- otherwise our own `NfsServer` runs for this folder only (package scope,
  not session: it must be gone before a later `sandbox` fixture starts its
  own). It waits for other developers' servers to release the lock.

Our server runs in its own event loop on a background thread, so tests in
any loop can use it; tests that restart or stop it go through
`ServerHandle.call`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path

import pytest

from imageio_ext.store import NfsTarget
from sandbox.nfs import LOCK_PATH, NfsServer


class ServerHandle:
    def __init__(self, srv: NfsServer | None, url: str, export_dir: Path):
        self.srv = srv  # None: someone else's server, not ours to control
        self.url = url
        self.export_dir = export_dir
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nfs-server-loop", daemon=True)
        self._thread.start()

    def require_control(self) -> NfsServer:
        if self.srv is None:
            pytest.skip("the NFS server belongs to this session's sandbox; not ours to stop")
        return self.srv

    def call_sync(self, coro_fn, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    async def call(self, coro_fn):
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro_fn(), self.loop))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _lock_holder() -> int | None:
    try:
        return int(LOCK_PATH.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_descendant(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == me:
            return True
    return False


@pytest.fixture(scope="package")
def nfs_server(request, tmp_path_factory):
    holder = _lock_holder()
    if holder is not None and holder != os.getpid() and _is_descendant(holder):
        url, path = request.getfixturevalue("nfs_target")
        h = ServerHandle(None, url, Path(path))
        yield h
        h.close()
        return
    base = tmp_path_factory.mktemp("nfs")
    srv = NfsServer(base / "export", base / "state")
    h = ServerHandle(srv, srv.url, srv.export_dir)
    # Other developers' sandboxes may hold the machine's NFS ports for a while.
    h.call_sync(lambda: srv.start(lock_timeout=300), timeout=330)
    try:
        yield h
    finally:
        h.call_sync(srv.stop)
        h.close()


@pytest.fixture
async def store_url(nfs_server):
    """A fresh directory inside the export, created through NFS itself.

    (Created over NFS rather than in the local folder so ganesha's caches
    never see a change behind their back.)
    """
    name = f"ovault-store-test-{uuid.uuid4().hex[:12]}"
    root = NfsTarget(nfs_server.url)
    try:
        await root.makedirs(name)
    finally:
        await root.close()
    return f"{nfs_server.url}/{name}"
