"""A small read-only NBD server over one backup disk (file-level recovery).

Why our own instead of nbdkit + its Python plugin: the export is a thin layer
over `DiskReader` (chunk lookup, digest verification, zstd), which already
lives in this process's venv and event loop. nbdkit's Python plugin would run
the store code in nbdkit's embedded system interpreter, needing the venv's
packages importable there and two more Debian packages on every host; the
protocol subset a read-only export needs is ~250 lines. qemu-img, qemu-nbd
(``--list``), nbdinfo and the kernel client all speak it.

Protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md):
fixed newstyle handshake with NO_ZEROES; options EXPORT_NAME, ABORT, LIST,
INFO and GO (with NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE); everything else
(STARTTLS, STRUCTURED_REPLY, meta contexts) is refused with ERR_UNSUP, so
clients fall back to simple replies.

Exposure: a unix socket is created 0600 (umask held during bind, no window);
TCP listens on loopback only (`check_loopback`: there is no TLS or client
authentication, so a remote listener would hand the disk to anyone). Commands: READ, DISC, FLUSH and CACHE
(no-ops); WRITE, TRIM, WRITE_ZEROES get EPERM; anything else EINVAL.

Reads are served from a small LRU of decompressed, verified chunks, so a
client reading 64 KiB at a time does not decompress a 4 MiB chunk 64 times.
A chunk that fails verification answers EIO (and is logged).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import socket
import stat
import struct

import structlog

from ..store import DiskReader, StoreError, ZERO_DIGEST

log = structlog.get_logger("ovault.nbd")

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN = 2**31 + 1, 2**31 + 3, 2**31 + 6
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
TFLAGS = 1 | 2 | 4 | 256  # HAS_FLAGS, READ_ONLY, SEND_FLUSH, CAN_MULTI_CONN
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES = 0, 1, 2, 3, 4, 5, 6
EPERM, EIO, EINVAL = 1, 5, 22
MAX_REQUEST = 32 << 20


class ChunkCache:
    """Decompressed chunks by index, LRU, with one fetch per chunk in flight."""

    def __init__(self, reader: DiskReader, capacity: int = 16):
        self.reader = reader
        self.capacity = capacity
        self._lru: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._pending: dict[int, asyncio.Future] = {}

    async def get(self, i: int) -> bytes:
        if self.reader.index.get(i) == ZERO_DIGEST:
            return bytes(self.reader.index.chunk_len(i))
        data = self._lru.get(i)
        if data is not None:
            self._lru.move_to_end(i)
            return data
        fut = self._pending.get(i)
        if fut is None:
            fut = self._pending[i] = asyncio.ensure_future(self.reader.read_chunk(i))
            fut.add_done_callback(lambda f, i=i: self._settle(i, f))
        return await asyncio.shield(fut)

    def _settle(self, i: int, fut: asyncio.Future) -> None:
        self._pending.pop(i, None)
        if not fut.cancelled() and fut.exception() is None:
            self._lru[i] = fut.result()
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)

    async def read(self, offset: int, length: int) -> bytes:
        cs = self.reader.chunk_size
        parts = []
        end = offset + length
        for i in range(offset // cs, (end - 1) // cs + 1):
            data = await self.get(i)
            lo, hi = max(offset - i * cs, 0), min(end - i * cs, len(data))
            parts.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class NbdExport:
    """A running read-only export. ``url`` is what qemu-img takes."""

    def __init__(self, reader: DiskReader, name: str = "", cache_chunks: int = 16, max_inflight: int = 16):
        self.reader = reader
        self.name = name
        self.size = reader.size
        self.cache = ChunkCache(reader, cache_chunks)
        self.max_inflight = max_inflight
        self.server: asyncio.AbstractServer | None = None
        self.url = ""
        self.connections = 0
        self.bytes_served = 0
        self._conns: set[asyncio.Task] = set()

    async def start(self, *, unix_path: str | None = None, host: str | None = None, port: int = 0) -> "NbdExport":
        if unix_path:
            try:
                if stat.S_ISSOCK(os.lstat(unix_path).st_mode):
                    os.unlink(unix_path)  # a stale socket of ours; any other file is left alone
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # the socket is 0600 from its creation on: no window
            try:
                sock.bind(unix_path)
            except OSError:
                sock.close()
                raise
            finally:
                os.umask(old)
            self.server = await asyncio.start_unix_server(self._client, sock=sock)
            self.url = f"nbd+unix:///{self.name}?socket={unix_path}"
        else:
            # No authentication and no TLS on the wire: loopback only.
            check_loopback(host or "127.0.0.1")
            self.server = await asyncio.start_server(self._client, host or "127.0.0.1", port)
            h, p = self.server.sockets[0].getsockname()[:2]
            self.url = f"nbd://{h}:{p}/{self.name}"
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self.server.wait_closed()
            self.server = None

    async def __aenter__(self) -> "NbdExport":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- one client -----------------------------------------------------------

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        self.connections += 1
        try:
            if await self._handshake(r, w):
                await self._transmission(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("nbd.client_failed")
        finally:
            self._conns.discard(task)
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _handshake(self, r, w) -> bool:
        w.write(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        await w.drain()
        (cflags,) = struct.unpack(">I", await r.readexactly(4))
        no_zeroes = bool(cflags & FLAG_NO_ZEROES)
        while True:
            magic, opt, length = struct.unpack(">QII", await r.readexactly(16))
            if magic != IHAVEOPT or length > 65536:
                return False
            data = await r.readexactly(length)

            def reply(rtype: int, payload: bytes = b"") -> None:
                w.write(struct.pack(">QIII", REPLY_MAGIC, opt, rtype, len(payload)) + payload)

            if opt == OPT_EXPORT_NAME:
                if data.decode(errors="replace") != self.name:
                    return False  # the protocol has no error reply here: drop the connection
                w.write(struct.pack(">QH", self.size, TFLAGS) + (b"" if no_zeroes else bytes(124)))
                await w.drain()
                return True
            if opt == OPT_ABORT:
                reply(REP_ACK)
                await w.drain()
                return False
            if opt == OPT_LIST:
                name = self.name.encode()
                reply(REP_SERVER, struct.pack(">I", len(name)) + name)
                reply(REP_ACK)
            elif opt in (OPT_INFO, OPT_GO):
                if length < 6:
                    reply(REP_ERR_INVALID)
                else:
                    (nlen,) = struct.unpack(">I", data[:4])
                    name = data[4:4 + nlen].decode(errors="replace")
                    (nreq,) = struct.unpack(">H", data[4 + nlen:6 + nlen])
                    reqs = struct.unpack(f">{nreq}H", data[6 + nlen:6 + nlen + 2 * nreq])
                    if name != self.name:
                        reply(REP_ERR_UNKNOWN, f"no export {name!r}".encode())
                    else:
                        reply(REP_INFO, struct.pack(">HQH", INFO_EXPORT, self.size, TFLAGS))
                        if INFO_BLOCK_SIZE in reqs:
                            cs = self.reader.chunk_size
                            pref = cs if cs & (cs - 1) == 0 else 4096
                            reply(REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, 1, pref, MAX_REQUEST))
                        reply(REP_ACK)
                        if opt == OPT_GO:
                            await w.drain()
                            return True
            else:
                reply(REP_ERR_UNSUP)
            await w.drain()

    async def _transmission(self, r, w) -> None:
        lock = asyncio.Lock()
        slots = asyncio.Semaphore(self.max_inflight)
        tasks: set[asyncio.Task] = set()

        async def send(handle: int, err: int, payload: bytes = b"") -> None:
            async with lock:
                w.write(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, err, handle))
                if payload:
                    w.write(payload)
                await w.drain()

        async def read(handle: int, offset: int, length: int) -> None:
            try:
                data = await self.cache.read(offset, length)
            except StoreError as e:
                log.error("nbd.read_failed", offset=offset, length=length, error=str(e))
                await send(handle, EIO)
            else:
                self.bytes_served += length
                await send(handle, 0, data)
            finally:
                slots.release()

        try:
            while True:
                magic, _flags, cmd, handle, offset, length = struct.unpack(">IHHQQI", await r.readexactly(28))
                if magic != REQUEST_MAGIC:
                    return
                if cmd == CMD_READ:
                    if length > MAX_REQUEST or offset + length > self.size:
                        await send(handle, EINVAL)
                        continue
                    if length == 0:
                        await send(handle, 0)
                        continue
                    await slots.acquire()
                    t = asyncio.create_task(read(handle, offset, length))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                elif cmd == CMD_DISC:
                    return
                elif cmd == CMD_WRITE:
                    if length > MAX_REQUEST:
                        return
                    await r.readexactly(length)
                    await send(handle, EPERM)
                elif cmd in (CMD_FLUSH, CMD_CACHE):
                    await send(handle, 0)
                elif cmd in (CMD_TRIM, CMD_WRITE_ZEROES):
                    await send(handle, EPERM)
                else:
                    await send(handle, EINVAL)
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


def check_loopback(host: str) -> None:
    """Refuse a TCP listener anywhere but loopback.

    The export has no authentication: NBD's STARTTLS with X.509 client
    certificates or TLS-PSK (what qemu's client offers) is not implemented
    here, and Python's ssl module has no PSK before 3.13. Anyone who can reach
    the port could read the disk, so only this machine may."""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise ValueError(f"an NBD export over TCP listens on loopback only (not {host}): it has no "
                         f"authentication or TLS; use a unix socket, or an SSH tunnel to a loopback port")


async def serve_disk(reader: DiskReader, *, unix_path: str | None = None, host: str | None = None, port: int = 0,
                     name: str = "") -> NbdExport:
    """Start a read-only NBD export of one backup disk; ``await export.close()`` to stop."""
    return await NbdExport(reader, name).start(unix_path=unix_path, host=host, port=port)
