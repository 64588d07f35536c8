"""An asyncio client for ovirt-imageio's data API (`/images/{ticket}`).

aiohttp is already the project's HTTP stack; it speaks HTTPS with a CA file
and plain HTTP over a unix socket (`UnixConnector`), which is how a mover on
the transfer's host reaches the daemon without TLS (imageio's "local"
listener; ~8% faster here, see docs/performance.md).

Choosing the transport: a ticket id is a random UUID known only to the daemon
that serves the transfer, so if ``OPTIONS /images/{ticket}`` over the
configured local socket answers 200, that daemon *is* the transfer's daemon
and the socket is used. Otherwise the transfer URL is used as given. (imageio
also reports ``unix_socket`` in OPTIONS, but a remote daemon's socket path
exists on every host under the same name, so the path alone proves nothing.)

Writes use ``?flush=n`` / ``"flush": false`` and one explicit flush at the
end, like the reference client: imageio flushes after every PUT otherwise.

Data requests (GET of a range, PUT) go through blocking ``http.client``
connections in a small thread pool, one connection per worker; everything
else goes through aiohttp. Measured here (docs/performance.md): 512 MiB of
4 MiB PUTs over the unix socket took 1.40 s with aiohttp and 0.61 s with
blocking sockets in threads. Python 3.11's selector transport buffers what a
send could not write in a bytearray and memmoves it after every partial
send, so a 4 MiB body through a ~200 KiB socket buffer costs far more than
sendall() from a thread, which also runs without the GIL while it waits.

Beside imageio: with ``control_socket`` (this host's imageio control
socket) the client asks the daemon for the ticket's backend; an ``nbd:unix:``
export is then read and written directly (`nbd_direct`, transport ``nbd``),
with imageio still answering extents and a periodic ``OPTIONS`` that keeps the
ticket active. Anything else falls back to the HTTP paths above.

Connection errors are retried (every request used here is idempotent), with
a backoff that doubles from ``retry_delay`` up to ``retry_max_delay``: with
the defaults 6 retries span about 15 s, so a daemon restarted within a few
seconds costs a pause, not the disk; only the requests in flight are repeated,
the ranges already copied are not. A ticket the daemon does not know right
after such an error is waited for the same way (a restarted daemon gets its
tickets back from whoever added them); a 403/404 out of the blue fails at once. The idle keep-alive connections are dropped
at the first error (they all point at the daemon that went away). When the
retries run out the error names the request, the cause, and how long it tried.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import socket
import os
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import aiohttp

from ..retry import retrying
from .errors import (
    DirtyExtentsUnavailable,
    ImageioError,
    ImageioUnavailable,
    InvalidRequest,
    TransferNotFound,
)
from .nbd_direct import NbdPool, nbd_unix_url, ticket_info
from .plan import ImageExtent

_NET_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, OSError,
               http.client.HTTPException)


def _socket_present(path: str) -> bool:
    """Whether a local socket can be tried: an abstract socket (imageio's own
    default, "\\0/org/ovirt/imageio") has no file to look for; a path socket must exist."""
    return path.startswith("\0") or os.path.exists(path)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


class _BlockingConnections:
    """Keep-alive http.client connections for the data path, used from threads."""

    def __init__(self, factory, size: int):
        self._factory = factory
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="ovault-imageio")

    def request(self, method: str, path: str, headers: dict, body) -> tuple[int, str, bytes]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._factory()
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
        except BaseException:
            conn.close()
            raise
        if r.will_close:
            conn.close()
        else:
            self._idle.put(conn)
        return r.status, r.reason, data

    def drop_idle(self) -> None:
        """Close the idle connections (after an error: their peer may be gone)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.drop_idle()


class ImageioClient:
    """One transfer: ``async with ImageioClient(url, ...) as c:``.

    Implements the copy engine's `ImageSource` (extents, read) and
    `ImageSink` (write, zero, flush) interfaces.
    """

    def __init__(
        self,
        transfer_url: str,
        *,
        ca_file: str | None = None,
        local_socket: str | None = None,  # this host's imageio local socket, if any
        connections: int = 4,  # parallel HTTP requests
        retries: int = 6,  # extra attempts after a connection error (~15 s with the delays below)
        retry_delay: float = 0.5,  # first pause; doubles per attempt
        retry_max_delay: float = 4.0,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        blocking_reads: bool = True,  # range GETs on the blocking connections too (measured slightly faster)
        local_only: bool = False,  # only a ticket the local socket serves; never the transfer URL's server
        control_socket: str | None = None,  # this host's imageio control socket: enables direct NBD
        keepalive: float = 10.0,  # direct NBD: seconds between OPTIONS requests keeping the ticket active
    ):
        u = urlsplit(transfer_url)
        parts = u.path.rstrip("/").split("/")
        if u.scheme not in ("https", "http") or len(parts) < 3 or parts[-2] != "images" or not parts[-1]:
            raise InvalidRequest(f"transfer_url {transfer_url!r} is not an imageio URL like https://host:54322/images/<ticket>")
        self.transfer_url = transfer_url
        self.ticket = parts[-1]
        self.ca_file = ca_file
        self.local_socket = local_socket
        self.local_only = local_only
        self.connections = max(1, connections)
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.retried = 0  # requests repeated after a connection error
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._base = ""
        self._blocking: _BlockingConnections | None = None
        self._path = f"/images/{self.ticket}"
        self._sock_timeout = read_timeout
        self.blocking_reads = blocking_reads
        self.transport = ""  # "nbd", "unix" or "https"/"http" once open
        self.control_socket = control_socket
        self.keepalive = keepalive
        self._nbd: NbdPool | None = None
        self._keepalive_task: asyncio.Task | None = None
        self._ticket_gone: BaseException | None = None
        self.nbd_url = ""
        self.options: dict = {}
        self.bytes_read = 0
        self.bytes_written = 0
        self.requests = 0

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> "ImageioClient":
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def open(self) -> None:
        if self.local_socket and _socket_present(self.local_socket):
            session = self._new_session(aiohttp.UnixConnector(path=self.local_socket, limit=self.connections))
            base = f"http://localhost/images/{self.ticket}"
            try:
                async with session.options(base) as r:
                    if r.status == 200:
                        self._session, self._base, self.transport = session, base, "unix"
                        self.options = json.loads(await r.read() or b"{}")
            except _NET_ERRORS:
                pass
            if self._session is None:
                await session.close()
        if self._session is None and self.local_only:
            raise InvalidRequest(f"ticket {self.ticket} is not served by this host's imageio local socket "
                                 f"({self.local_socket}); transfers over the network are not accepted here")
        if self._session is None:
            u = urlsplit(self.transfer_url)
            if u.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
                conn = aiohttp.TCPConnector(ssl=ctx, limit=self.connections)
            else:
                conn = aiohttp.TCPConnector(limit=self.connections)
            self._session = self._new_session(conn)
            self._base = self.transfer_url.rstrip("/")
            self.transport = u.scheme
            status, body = await self._request("OPTIONS", "")
            self.options = json.loads(body or b"{}")
        # Never open more connections than the backend serves (qemu-nbd --shared).
        limit = min(self.options.get("max_readers") or 64, self.options.get("max_writers") or 64)
        self.connections = max(1, min(self.connections, limit))
        self._blocking = _BlockingConnections(self._connection_factory(), self.connections)
        if self.control_socket and _socket_present(self.control_socket):
            await self._open_nbd(limit)

    async def _open_nbd(self, limit: int) -> None:
        """Use the ticket's NBD export directly if this host's daemon serves it."""
        info = await ticket_info(self.control_socket, self.ticket)
        url = (info or {}).get("url", "")
        if nbd_unix_url(url) is None:
            return
        # imageio keeps one backend connection for our extents/OPTIONS requests.
        pool = NbdPool(url, max(1, min(self.connections, limit - 1)), sparse=bool(info.get("sparse", True)))
        try:
            await asyncio.get_running_loop().run_in_executor(pool.executor, pool.connect)
        except OSError:
            await asyncio.to_thread(pool.close)
            return  # not reachable from here (permissions, gone): imageio's path works
        self._nbd, self.nbd_url, self.transport = pool, url, "nbd"
        self.connections = pool.workers
        self._keepalive_task = asyncio.create_task(self._keep_ticket_active())

    async def _keep_ticket_active(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive)
            try:
                await self._request("OPTIONS", "")
            except (TransferNotFound, ImageioUnavailable) as e:
                self._ticket_gone = e
                return
            except ImageioError:
                pass

    async def _nbd_request(self, method: str, fn, *args):
        """``fn(*args)`` on the NBD pool's threads, with the usual retries and errors."""
        if self._ticket_gone is not None:
            raise self._ticket_gone
        loop = asyncio.get_running_loop()
        pool = self._nbd

        async def once():
            r = await loop.run_in_executor(pool.executor, fn, *args)
            self.requests += 1
            return r

        return await self._with_retries(method, f"/images/{self.ticket} (nbd)", once)

    def _connection_factory(self):
        timeout = self._sock_timeout
        if self.transport == "unix":
            path = self.local_socket
            self._path = f"/images/{self.ticket}"
            return lambda: _UnixHTTPConnection(path, timeout)
        u = urlsplit(self.transfer_url)
        self._path = u.path.rstrip("/")
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()
            return lambda: http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout, context=ctx)
        return lambda: http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)

    def _new_session(self, connector) -> aiohttp.ClientSession:
        # Large reads in big pieces: the default 64 KiB buffer costs ~10% CPU at 4 MiB bodies.
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False, read_bufsize=1 << 20
        )

    async def close(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
            self._keepalive_task = None
        if self._nbd is not None:
            await asyncio.to_thread(self._nbd.close)
            self._nbd = None
        if self._blocking is not None:
            await asyncio.to_thread(self._blocking.close)
            self._blocking = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def features(self) -> list[str]:
        return list(self.options.get("features", []))

    # -- requests --------------------------------------------------------------

    async def _request(self, method: str, query: str, *, headers=None, data=None, json_body=None,
                       ok=(200, 206, 204), expect_len: int | None = None) -> tuple[int, bytes]:
        assert self._session is not None, "open() first"
        url = self._base + query
        what = f"/images/{self.ticket}{query}"

        async def once() -> tuple[int, bytes]:
            async with self._session.request(method, url, headers=headers, data=data, json=json_body) as r:
                body = await r.read()
                self.requests += 1
                if r.status not in ok:
                    reason = body.decode(errors="replace") or r.reason or ""
                    cls = TransferNotFound if r.status in (403, 404) else ImageioError
                    raise cls(method, what, r.status, reason)
                if expect_len is not None and len(body) != expect_len:
                    raise aiohttp.ClientPayloadError(f"short read: {len(body)} of {expect_len} bytes")
                return r.status, body

        return await self._with_retries(method, what, once)

    async def _with_retries(self, method: str, what: str, once):
        """``once()`` with the retries the module docstring describes.

        A ticket unknown right after a connection error is waited for too: a
        daemon that was restarted gets its tickets back from whoever added them."""
        started: float | None = None  # when imageio stopped answering

        def worth_retrying(e: BaseException) -> bool:
            return isinstance(e, _NET_ERRORS) or (started is not None and isinstance(e, TransferNotFound))

        def pause(e: BaseException) -> None:
            if self._blocking is not None:
                self._blocking.drop_idle()  # they all point at the daemon that went away
            self.retried += 1

        tries = 0
        try:
            async for attempt in retrying(what=f"imageio {method} {what}", attempts=self.retries + 1,
                                          retry_if=worth_retrying, first=self.retry_delay,
                                          cap=self.retry_max_delay, jitter=False, on_retry=pause,
                                          level="info"):
                with attempt:
                    tries += 1
                    try:
                        return await once()
                    except _NET_ERRORS:
                        started = started if started is not None else time.monotonic()
                        raise
        except TransferNotFound as e:
            if started is None:  # not after an outage: the transfer is over
                raise
            raise TransferNotFound(method, what, e.http_status,
                                   f"{e.reason}; the ticket was still unknown {time.monotonic() - started:.1f} s "
                                   "after imageio stopped answering (the daemon restarted without it)") from e
        except _NET_ERRORS as e:
            waited = time.monotonic() - (started or time.monotonic())
            raise ImageioUnavailable(
                self._where(), f"{method} {what}: {type(e).__name__}: {e} (gave up after {tries} "
                               f"attempts over {waited:.1f} s)") from e

    async def _data_request(self, method: str, query: str, headers: dict, body=None, ok=(200, 204),
                            expect_len: int | None = None) -> bytes:
        """A GET/PUT on the blocking connections, with the same retries and errors."""
        assert self._blocking is not None, "open() first"
        loop = asyncio.get_running_loop()
        path = self._path + query
        what = f"/images/{self.ticket}{query}"

        async def once() -> bytes:
            status, reason, data = await loop.run_in_executor(
                self._blocking.executor, self._blocking.request, method, path, headers, body)
            self.requests += 1
            if status not in ok:
                text = data.decode(errors="replace") or reason or ""
                cls = TransferNotFound if status in (403, 404) else ImageioError
                raise cls(method, what, status, text)
            if expect_len is not None and len(data) != expect_len:
                raise http.client.IncompleteRead(data, expect_len - len(data))
            return data

        return await self._with_retries(method, what, once)

    def _where(self) -> str:
        if self.transport == "nbd":
            return self.nbd_url
        return f"unix:{self.local_socket}" if self.transport == "unix" else self.transfer_url

    # -- ImageSource -------------------------------------------------------------

    async def extents(self, context: str = "zero") -> list[ImageExtent]:
        try:
            _, body = await self._request("GET", f"/extents?context={context}")
        except ImageioError as e:
            if context == "dirty" and e.http_status in (404, 400, 501):
                raise DirtyExtentsUnavailable(str(e)) from e
            raise
        out = []
        for x in json.loads(body):
            dirty = bool(x.get("dirty", True)) if context == "dirty" else True
            out.append(ImageExtent(int(x["start"]), int(x["length"]), bool(x.get("zero", False)), dirty))
        return out

    async def read(self, offset: int, length: int) -> bytes:
        if self._nbd is not None:
            body = await self._nbd_request("GET", self._nbd.read, offset, length)
            self.bytes_read += length
            return body
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        if self.blocking_reads:
            body = await self._data_request("GET", "", headers, ok=(206, 200), expect_len=length)
        else:
            _, body = await self._request("GET", "", headers=headers, ok=(206, 200), expect_len=length)
        self.bytes_read += length
        return body

    # -- ImageSink ---------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> None:
        if self._nbd is not None:
            await self._nbd_request("PUT", self._nbd.write, offset, data)
            self.bytes_written += len(data)
            return
        await self._data_request("PUT", "?flush=n", {"Content-Range": f"bytes {offset}-{offset + len(data) - 1}/*",
                                                     "Content-Type": "application/octet-stream",
                                                     "Content-Length": str(len(data))}, body=data)
        self.bytes_written += len(data)

    async def zero(self, offset: int, length: int) -> None:
        if self._nbd is not None and self._nbd.can_zero:
            await self._nbd_request("PATCH", self._nbd.zero, offset, length)
            return
        await self._request("PATCH", "", json_body={"op": "zero", "offset": offset, "size": length, "flush": False},
                            ok=(200, 204))

    async def flush(self) -> None:
        if self._nbd is not None:
            await self._nbd_request("PATCH", self._nbd.flush)
            return
        await self._request("PATCH", "", json_body={"op": "flush"}, ok=(200, 204))
