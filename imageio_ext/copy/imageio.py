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

Connection errors are retried a few times (a daemon restart or a dropped
keep-alive connection); every request used here is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import warnings
from urllib.parse import urlsplit

import aiohttp

from .errors import (
    DirtyExtentsUnavailable,
    ImageioError,
    ImageioUnavailable,
    InvalidRequest,
    TransferNotFound,
)
from .plan import ImageExtent

_NET_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, OSError)


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
        retries: int = 3,  # extra attempts after a connection error
        retry_delay: float = 0.5,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
    ):
        u = urlsplit(transfer_url)
        parts = u.path.rstrip("/").split("/")
        if u.scheme not in ("https", "http") or len(parts) < 3 or parts[-2] != "images" or not parts[-1]:
            raise InvalidRequest(f"transfer_url {transfer_url!r} is not an imageio URL like https://host:54322/images/<ticket>")
        self.transfer_url = transfer_url
        self.ticket = parts[-1]
        self.ca_file = ca_file
        self.local_socket = local_socket
        self.connections = max(1, connections)
        self.retries = retries
        self.retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._base = ""
        self.transport = ""  # "unix" or "https"/"http" once open
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
        if self.local_socket and os.path.exists(self.local_socket):
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

    def _new_session(self, connector) -> aiohttp.ClientSession:
        # Large reads in big pieces: the default 64 KiB buffer costs ~10% CPU at 4 MiB bodies.
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False, read_bufsize=1 << 20
        )

    async def close(self) -> None:
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
        attempt = 0
        while True:
            try:
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
            except _NET_ERRORS as e:
                if attempt >= self.retries:
                    raise ImageioUnavailable(self._where(), f"{method} {what}: {type(e).__name__}: {e}") from e
                attempt += 1
                await asyncio.sleep(self.retry_delay * attempt)

    def _where(self) -> str:
        return f"unix:{self.local_socket}" if self.transport == "unix" else self.transfer_url

    # -- ImageSource -------------------------------------------------------------

    async def extents(self, context: str = "zero") -> list[ImageExtent]:
        try:
            _, body = await self._request("GET", f"/extents?context={context}")
        except ImageioError as e:
            if context == "dirty" and e.status in (404, 400, 501):
                raise DirtyExtentsUnavailable(str(e)) from e
            raise
        out = []
        for x in json.loads(body):
            dirty = bool(x.get("dirty", True)) if context == "dirty" else True
            out.append(ImageExtent(int(x["start"]), int(x["length"]), bool(x.get("zero", False)), dirty))
        return out

    async def read(self, offset: int, length: int) -> bytes:
        _, body = await self._request(
            "GET", "", headers={"Range": f"bytes={offset}-{offset + length - 1}"}, ok=(206, 200), expect_len=length
        )
        self.bytes_read += length
        return body

    # -- ImageSink ---------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> None:
        # aiohttp warns about bytes bodies over 1 MiB ("might lock the event
        # loop"): a 4 MiB write into the transport's buffer does not block, and
        # BytesIOPayload's 64 KiB slicing measured slower. Build it quietly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            data = aiohttp.BytesPayload(data, content_type="application/octet-stream")
        await self._request(
            "PUT", "?flush=n",
            headers={"Content-Range": f"bytes {offset}-{offset + data.size - 1}/*"},
            data=data, ok=(200, 204),
        )
        self.bytes_written += data.size

    async def zero(self, offset: int, length: int) -> None:
        await self._request("PATCH", "", json_body={"op": "zero", "offset": offset, "size": length, "flush": False},
                            ok=(200, 204))

    async def flush(self) -> None:
        await self._request("PATCH", "", json_body={"op": "flush"}, ok=(200, 204))
