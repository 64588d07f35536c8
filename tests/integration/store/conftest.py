"""One real nfs-ganesha for the whole session (ports 2049/111 are per machine).

The server runs in its own event loop on a background thread, so tests in
any loop can use it, and tests that restart or stop it do so through
`ServerHandle.call`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from imageio_ext.store import NfsTarget
from sandbox.nfs import NfsServer


class ServerHandle:
    def __init__(self, srv: NfsServer):
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nfs-server-loop", daemon=True)
        self._thread.start()

    def call_sync(self, coro_fn, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    async def call(self, coro_fn):
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro_fn(), self.loop))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def nfs_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("nfs")
    h = ServerHandle(NfsServer(base / "export", base / "state"))
    # Other developers' sandboxes may hold the machine's NFS ports for a while.
    h.call_sync(lambda: h.srv.start(lock_timeout=300), timeout=330)
    try:
        yield h
    finally:
        h.call_sync(h.srv.stop)
        h.close()


@pytest.fixture
async def store_url(nfs_server):
    """A fresh directory inside the export, created through NFS itself.

    (Created over NFS rather than in the local folder so ganesha's caches
    never see a change behind their back.)
    """
    name = f"t-{uuid.uuid4().hex[:12]}"
    root = NfsTarget(nfs_server.srv.url)
    try:
        await root.makedirs(name)
    finally:
        await root.close()
    return f"{nfs_server.srv.url}/{name}"
