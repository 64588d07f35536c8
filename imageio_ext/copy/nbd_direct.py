"""Reading and writing a transfer's disk beside imageio, through its NBD export.

When the mover runs on the host whose ovirt-imageio daemon serves a transfer,
the bytes need not pass through the daemon's HTTP server at all: the daemon's
*control* service (``[control] socket``, ``/run/ovirt-imageio/sock`` by
default; reachable only on this host) answers ``GET /tickets/<id>`` with the
ticket, whose ``url`` names the backend — for vdsm's transfers an NBD server on
a unix socket, ``nbd:unix:/run/vdsm/nbd/<id>.sock[:exportname=<name>]``. A
ticket id is a random UUID only the serving daemon knows, so an answer from
this host's control socket proves the transfer is local.

The NBD client is ovirt-imageio's own (``ovirt_imageio._internal.nbd``): it is
installed with the package the copy engine already depends on, speaks
structured replies (holes arrive as zeros), reads into caller buffers, and is
what the daemon itself uses against the same exports. It is internal to
ovirt-imageio, so the parts used here (``open``, ``Client.readinto``,
``write``, ``zero``, ``flush``, ``export_size``, ``maximum_block_size``,
``transmission_flags``) are pinned by tests/integration/mover/test_copy_nbd.py
against the real daemon and qemu-nbd. Each connection is blocking and is used
by one worker thread at a time; the socket calls release the GIL.

Only ``nbd:unix:`` URLs with an absolute path are used; anything else (a file
backend, NBD over TCP) stays on imageio's HTTP path. Extents still come from
imageio (one request), and the daemon is asked ``OPTIONS`` every few seconds
while the copy runs: that counts as activity on the ticket (the engine pauses
transfers that look idle) and tells the copy at once when the ticket is gone.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import aiohttp

ZERO_STEP = 1 << 30  # NBD WRITE_ZEROES length is 32-bit and qemu-nbd caps it below 2 GiB
_UNIX_URL = re.compile(r"^nbd:unix:(?P<path>/[^:]+)(?::exportname=(?P<name>.*))?$")


class NbdFailure(OSError):
    """An NBD request failed (connection lost, or an error reply): retried like a
    lost HTTP connection, then reported as the transfer being unavailable."""


def nbd_unix_url(url: str) -> tuple[str, str] | None:
    """(socket path, export name) of an ``nbd:unix:`` URL; None for any other URL."""
    m = _UNIX_URL.match(url or "")
    if not m:
        return None
    return m["path"], m["name"] or ""


async def ticket_info(control_socket: str, ticket: str, timeout: float = 10.0) -> dict | None:
    """The ticket as this host's imageio control service reports it; None if the
    service is not reachable here or does not know the ticket."""
    conn = aiohttp.UnixConnector(path=control_socket)
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(f"http://localhost/tickets/{ticket}") as r:
                if r.status != 200:
                    return None
                info = json.loads(await r.read())
                return info if isinstance(info, dict) else None
    except (aiohttp.ClientError, OSError, ValueError, TimeoutError):
        return None


def _nbd():
    from ovirt_imageio._internal import nbd  # internal API: pinned by the integration tests

    return nbd


class NbdPool:
    """Blocking NBD connections to one export, one per worker thread."""

    def __init__(self, url: str, size: int, *, sparse: bool = True):
        self.url = url
        self.workers = max(1, size)
        self.sparse = sparse
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ovault-nbd")
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._local = threading.local()  # each worker thread's read buffer
        self._all: list = []
        self.export_size = 0
        self.read_only = True
        self.can_zero = False

    def connect(self) -> None:
        """Open the first connection (in a thread): proves the export is reachable."""
        c = self._get()
        self.export_size = c.export_size
        nbd = _nbd()
        self.read_only = bool(c.transmission_flags & nbd.FLAG_READ_ONLY)
        self.can_zero = bool(c.transmission_flags & nbd.FLAG_SEND_WRITE_ZEROES)
        self._idle.put(c)

    def _get(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        nbd = _nbd()
        try:
            c = nbd.open(urlparse(self.url))
        except (nbd.Error, OSError) as e:
            raise NbdFailure(f"cannot connect to {self.url}: {e}") from e
        self._all.append(c)
        return c

    def _run(self, fn):
        c = self._get()
        nbd = _nbd()
        try:
            out = fn(c)
        except (nbd.Error, OSError) as e:
            self._discard(c)
            raise NbdFailure(f"{self.url}: {type(e).__name__}: {e}") from e
        except BaseException:
            self._discard(c)
            raise
        self._idle.put(c)
        return out

    def _discard(self, c) -> None:
        try:
            self._all.remove(c)
        except ValueError:
            pass
        try:
            c.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to say goodbye
            pass

    # -- called in self.executor ----------------------------------------------

    def readinto(self, offset: int, buf) -> int:
        view = memoryview(buf).cast("B")

        def do(c):
            step = max(4096, c.maximum_block_size)
            for o in range(0, len(view), step):
                c.readinto(offset + o, view[o:o + step])
            return len(view)

        return self._run(do)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` as ``bytes`` (what the store keeps): received
        into this thread's reused buffer, then copied once — no fresh zeroed buffer per
        read, and no second copy in the store."""
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < length:
            buf = self._local.buf = bytearray(length)
        with memoryview(buf) as whole, whole[:length] as view:
            self.readinto(offset, view)
            return bytes(view)

    def write(self, offset: int, data) -> None:
        view = memoryview(data).cast("B")

        def do(c):
            step = max(4096, c.maximum_block_size)
            for o in range(0, len(view), step):
                c.write(offset + o, view[o:o + step])

        self._run(do)

    def zero(self, offset: int, length: int) -> None:
        def do(c):
            for o in range(offset, offset + length, ZERO_STEP):
                c.zero(o, min(ZERO_STEP, offset + length - o), punch_hole=self.sparse)

        self._run(do)

    def flush(self) -> None:
        """Flush through every open connection (each is idle when a copy flushes)."""
        conns = []
        while True:
            try:
                conns.append(self._idle.get_nowait())
            except queue.Empty:
                break
        if not conns:
            conns.append(self._get())
        nbd = _nbd()
        try:
            for c in conns:
                c.flush()
        except (nbd.Error, OSError) as e:
            for c in conns:
                self._discard(c)
            raise NbdFailure(f"{self.url}: flush: {e}") from e
        for c in conns:
            self._idle.put(c)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for c in list(self._all):
            self._discard(c)
