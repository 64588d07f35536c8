"""Browse sessions: one NBD export + one libguestfs worker per (backup, disk).

A session is opened on first use and shared by every request for the same
backup disk (backups are immutable, so a session never goes stale); it is
closed after `files.idle_seconds` without a request in flight. Limits: a user
holds at most `files.per_user` sessions and the replica at most
`files.max_sessions`; past either, the least recently used idle one is let
go to make room, and when every one is busy (a download streaming) the answer
is 429 `file_sessions_exceeded`.

The libguestfs handle lives in a worker process (`files/worker.py` says why);
the NBD export it reads through runs in this process's event loop.

| lock / owner            | guards                                          |
|-------------------------|-------------------------------------------------|
| `SessionManager._lock`  | the session table, the per-user counts          |
| `Worker._lock`          | the worker's pipe (one request at a time)       |
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field

import structlog

from imageio_ext.errors import from_dict
from imageio_ext.nbd.server import serve_disk

from ..errors import OvaultError
from .guest import GuestfsError
from .settings import FileRestore
from .protocol import HEADER

log = structlog.get_logger("ovault.files")


class TooManySessions(OvaultError):
    msg = "{self.reason}"
    code, title, status = "file_sessions_exceeded", "Too many file-restore sessions", 429


class Worker:
    """The client side of one `worker.py` process."""

    def __init__(self, proc):
        self.proc = proc
        self._lock = asyncio.Lock()
        self.info: dict = {}

    @classmethod
    async def start(cls, sock: str, settings: FileRestore, cache_dir: str) -> "Worker":
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator.files.worker", "--socket", sock, "--accel", settings.accel,
            "--memsize", str(settings.memsize_mib), "--cache-dir", cache_dir,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 22)
        w = cls(proc)
        try:
            w.info = await w._answer()
        except BaseException:
            await w.kill()
            raise
        return w

    async def _frame(self) -> tuple[bytes, bytes]:
        try:
            kind, n = HEADER.unpack(await self.proc.stdout.readexactly(HEADER.size))
            return kind, await self.proc.stdout.readexactly(n)
        except asyncio.IncompleteReadError:
            raise GuestfsError("the libguestfs worker ended unexpectedly") from None

    async def _answer(self):
        kind, data = await self._frame()
        if kind == b"B":
            return data
        doc = json.loads(data)
        if not doc.get("ok"):
            raise from_dict(doc.get("error"), GuestfsError)
        return doc.get("result")

    def _send(self, op: str, *args) -> None:
        payload = json.dumps({"op": op, "args": list(args)}).encode()
        self.proc.stdin.write(HEADER.pack(b"J", len(payload)) + payload)

    async def call(self, op: str, *args):
        async with self._lock:
            self._send(op, *args)
            return await self._answer()

    async def tar(self, paths: list[str], limit: int):
        """The archive's bytes as they come; stopping early kills the worker
        (its pipe would hold the rest of the archive)."""
        async with self._lock:
            self._send("tar", paths, limit)
            done = False
            try:
                while True:
                    kind, data = await self._frame()
                    if kind == b"B":
                        yield data
                        continue
                    doc = json.loads(data)
                    done = True
                    if not doc.get("ok"):
                        raise from_dict(doc.get("error"), GuestfsError)
                    return
            finally:
                if not done:
                    await self.kill()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def close(self, timeout: float = 30.0) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.call("close"), timeout)
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), timeout)
            except (asyncio.TimeoutError, OvaultError, OSError):
                pass
        await self.kill()


@dataclass(eq=False)
class Session:
    backup_id: str
    disk_id: str
    export: object
    tmpdir: str
    worker: Worker | None = None
    users: set = field(default_factory=set)
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    opened_in: float = 0.0  # seconds the appliance took to start

    @property
    def failed(self) -> dict:
        return (self.worker.info or {}).get("failed") or {} if self.worker else {}

    @property
    def filesystems(self) -> list[str]:
        return sorted((self.worker.info or {}).get("mounts") or {}) if self.worker else []

    @property
    def alive(self) -> bool:
        return self.worker is not None and self.worker.proc.returncode is None

    async def call(self, op: str, *args):
        async with self.hold():
            if not self.alive:
                raise GuestfsError("this file-restore session has ended; try again")
            return await self.worker.call(op, *args)

    @contextlib.asynccontextmanager
    async def hold(self):
        """Keep the session from being closed while a request (or a response stream) runs."""
        self.active += 1
        self.last_used = time.monotonic()
        try:
            yield self
        finally:
            self.active -= 1
            self.last_used = time.monotonic()

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.close()
            self.worker = None
        await self.export.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class SessionManager:
    def __init__(self, store, settings: FileRestore, cache_dir: str, *, clock=time.monotonic):
        self.store = store
        self.settings = settings
        self.cache_dir = cache_dir
        self.clock = clock
        self.sessions: dict[tuple[str, str], Session] = {}
        self._opening: dict[tuple[str, str], asyncio.Future] = {}
        self._opening_users: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_loop())

    async def close(self) -> None:
        if self._reaper:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for s in list(self.sessions.values()):
            await self._close(s)
        for fut in list(self._opening.values()):  # openings in flight close themselves
            await asyncio.gather(fut, return_exceptions=True)

    def held_by(self, user: str) -> int:
        return sum(1 for s in self.sessions.values() if user in s.users)

    async def get(self, user: str, vm_id: str, backup_id: str, disk_id: str,
                  index_digest: str | None = None) -> Session:
        """The session of this backup disk, opened when there is none."""
        key = (backup_id, disk_id)
        while True:
            async with self._lock:
                s = self.sessions.get(key)
                if s is not None and not s.alive:  # its worker died (or an archive was cut short)
                    await self._close(s)
                    s = None
                if s is not None:
                    if user not in s.users:
                        await self._check_user(user)
                        s.users.add(user)
                    s.last_used = self.clock()
                    return s
                fut = self._opening.get(key)
                if fut is None:
                    await self._check_user(user)
                    await self._make_room()
                    fut = asyncio.get_running_loop().create_future()
                    self._opening[key] = fut
                    self._opening_users[key] = user
                    mine = True
                else:
                    mine = False
            if not mine:
                await asyncio.shield(fut)  # raises what the opening raised
                continue
            try:
                s = await self._open(vm_id, backup_id, disk_id, index_digest)
                s.users.add(user)
                async with self._lock:
                    self.sessions[key] = s
                fut.set_result(None)
                return s
            except BaseException as e:
                fut.set_exception(e if isinstance(e, Exception) else GuestfsError("opening was cancelled"))
                fut.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                self._opening.pop(key, None)
                self._opening_users.pop(key, None)

    async def _check_user(self, user: str) -> None:
        """Room for one more session of `user`: past `files.per_user`, the user's
        least recently used idle session is let go (closed unless shared); when
        all of them are busy, 429."""
        held = self.held_by(user) + sum(1 for u in self._opening_users.values() if u == user)
        if held < self.settings.per_user:
            return
        idle = sorted((s for s in self.sessions.values() if user in s.users and s.active == 0),
                      key=lambda s: s.last_used)
        if not idle:
            raise TooManySessions(
                f"your {held} file-restore sessions (files.per_user = {self.settings.per_user}) are all "
                "busy; wait for a download to finish")
        idle[0].users.discard(user)
        if not idle[0].users:
            await self._close(idle[0])

    async def _make_room(self) -> None:
        if len(self.sessions) + len(self._opening) < self.settings.max_sessions:
            return
        idle = sorted((s for s in self.sessions.values() if s.active == 0), key=lambda s: s.last_used)
        if not idle:
            raise TooManySessions(f"all {self.settings.max_sessions} file-restore sessions of this "
                                  "server are busy (files.max_sessions); try again shortly")
        await self._close(idle[0])

    async def _open(self, vm_id: str, backup_id: str, disk_id: str, index_digest: str | None) -> Session:
        t0 = time.monotonic()
        reader = await self.store.open_disk(vm_id, backup_id, disk_id, catalog_sha256=index_digest)
        tmpdir = tempfile.mkdtemp(prefix="ovault-files-")  # 0700: only this user reaches the socket
        sock = os.path.join(tmpdir, "nbd.sock")
        try:
            export = await serve_disk(reader, unix_path=sock)
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        s = Session(backup_id, disk_id, export, tmpdir)
        try:
            s.worker = await Worker.start(sock, self.settings, os.path.join(self.cache_dir, "appliance"))
        except BaseException:
            await s.close()
            raise
        s.opened_in = time.monotonic() - t0
        s.last_used = self.clock()
        log.info("file-restore session opened", backup_id=backup_id, disk_id=disk_id,
                 seconds=round(s.opened_in, 1), filesystems=s.filesystems,
                 unmountable=s.failed or None)
        return s

    async def _close(self, s: Session) -> None:
        self.sessions.pop((s.backup_id, s.disk_id), None)
        try:
            await s.close()
        except Exception:
            log.exception("closing a file-restore session failed", backup_id=s.backup_id)
        log.info("file-restore session closed", backup_id=s.backup_id, disk_id=s.disk_id)

    async def reap(self) -> int:
        """Close the sessions idle for `files.idle_seconds`; how many were closed."""
        now = self.clock()
        async with self._lock:
            stale = [s for s in self.sessions.values()
                     if s.active == 0 and now - s.last_used >= self.settings.idle_seconds]
            for s in stale:
                await self._close(s)
        return len(stale)

    async def _reap_loop(self) -> None:
        every = max(1.0, min(30.0, self.settings.idle_seconds / 4))
        while True:
            await asyncio.sleep(every)
            try:
                await self.reap()
            except Exception:
                log.exception("file-restore session reaper failed")

    async def release(self, s: Session) -> None:
        """Close a session opened for one task (a search's indexing) unless in use."""
        async with self._lock:
            if s.active == 0 and self.sessions.get((s.backup_id, s.disk_id)) is s:
                await self._close(s)
