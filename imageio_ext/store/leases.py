"""Writer leases: how in-flight writers tell gc which chunks to leave alone.

Every process that writes chunks into a store (a backup copy on a mover, on
any host) first registers a *lease* on the target, in the target's own
namespace so movers on several hosts and a gc elsewhere all see it::

    .writers/<writer-id>      JSON: writer id, host, pid, purpose, vm/backup,
                              "started" (target clock), lease_seconds

- ``started`` is the mtime the target gave the lease file when it was first
  written (the server's clock, like every other time gc compares), so no
  host's clock is ever trusted. Every chunk the writer writes or re-uses
  (a dedup hit *touches* the chunk) afterwards has an mtime >= started.
- A background task *heartbeats*: it touches the lease file every
  ``heartbeat_seconds``. gc counts a lease as live while ``now - mtime <=
  lease_seconds``; a writer that died (SIGKILL, lost host) stops protecting
  anything one lease period after its last heartbeat.
- gc sweeps only chunks older than ``min(now - grace, oldest live start -
  margin)``; see `gc` and docs/store-format.md (*Writers and garbage
  collection*) for why that, plus a published-parent check at commit, keeps
  every in-flight backup whole without touching what it inherits.
- A writer whose own heartbeats lapsed for a lease period (a paused VM, a
  target outage) can no longer prove it was protected: `WriterLease.check`
  raises `LeaseLost` and its commit fails rather than publish an index whose
  chunks a gc may have removed meanwhile.

Usage (``WriterLease`` is also what `BackupWriter` holds for its disks)::

    async with writer_lease(target, purpose="backup", vm_id=vm, backup_id=b) as lease:
        ...             # write chunks
        lease.check()   # before committing what was written
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import AsyncIterator

import structlog

from .errors import NotFound, StoreError
from .target import Target, is_tmp_name, join

log = structlog.get_logger(__name__)

WRITERS_DIR = ".writers"
LEASE_FORMAT = "ovault-writer-lease"
LEASE_VERSION = 1
DEFAULT_LEASE_SECONDS = 300.0  # a dead writer protects chunks for at most this long
DEFAULT_HEARTBEAT_SECONDS = 30.0
MAX_LEASE_SECONDS = 86400.0  # a lease file asking for longer is invalid
MAX_LEASE_FILE = 4096


class LeaseLost(StoreError):
    """The writer's lease lapsed: gc may have removed chunks it relies on."""

    msg = ("Writer lease {self.writer_id} lapsed ({self.why}); chunks this writer stored may have been "
           "garbage-collected, so it cannot commit. Run the backup again")
    code = "lease_lost"

    def __init__(self, writer_id: str, why: str):
        self.writer_id = writer_id
        self.why = why


async def target_now(target: Target) -> float:
    """The target's clock: mtime of a freshly written probe file."""
    probe = f".clock{'.tmp.'}{os.getpid()}-{time.monotonic_ns()}"
    await target.write_file(probe, b"")
    try:
        return (await target.stat(probe)).mtime
    finally:
        with contextlib.suppress(NotFound):
            await target.remove(probe)


def lease_path(writer_id: str) -> str:
    return join(WRITERS_DIR, writer_id)


class WriterLease:
    """One writer's lease on one target. `register` before writing a chunk."""

    def __init__(
        self,
        target: Target,
        *,
        purpose: str = "backup",
        vm_id: str | None = None,
        backup_id: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float | None = None,
        clock=time.monotonic,
        owner: object | None = None,
    ):
        """``owner``: the object whose life the lease is for (a `BackupWriter`);
        if it is garbage-collected without releasing (dropped after an error),
        the lease releases itself at its next heartbeat instead of protecting
        chunks for as long as the process lives."""
        if not (1.0 <= lease_seconds <= MAX_LEASE_SECONDS):
            raise ValueError(f"lease_seconds must be within 1..{MAX_LEASE_SECONDS:.0f}, got {lease_seconds}")
        hb = lease_seconds / 4 if heartbeat_seconds is None else heartbeat_seconds
        if not (0 < hb <= lease_seconds / 3):
            raise ValueError(f"heartbeat_seconds must be > 0 and at most a third of the lease, got {hb}")
        self.target = target
        self.writer_id = uuid.uuid4().hex
        self.path = lease_path(self.writer_id)
        self.purpose = purpose
        self.vm_id = vm_id
        self.backup_id = backup_id
        self.lease_seconds = float(lease_seconds)
        self.heartbeat_seconds = float(hb)
        self.started: float | None = None  # target clock
        self._clock = clock
        self._last_ok: float | None = None  # monotonic start of the last successful heartbeat
        self._lapsed: str | None = None
        self._task: asyncio.Task | None = None
        self._owner = weakref.ref(owner) if owner is not None else None
        self.released = False

    def _doc(self) -> bytes:
        return json.dumps({
            "format": LEASE_FORMAT, "version": LEASE_VERSION, "writer_id": self.writer_id,
            "host": socket.gethostname(), "pid": os.getpid(), "purpose": self.purpose,
            "vm_id": self.vm_id, "backup_id": self.backup_id, "started": self.started,
            "lease_seconds": self.lease_seconds, "heartbeat_seconds": self.heartbeat_seconds,
        }, sort_keys=True).encode()

    async def register(self) -> "WriterLease":
        """Create the lease file (atomically), learn ``started`` from the target, start heartbeating."""
        if self.started is not None:
            raise RuntimeError("lease already registered")
        t0 = self._clock()
        await self.target.makedirs(WRITERS_DIR)
        await self.target.write_file(self.path, self._doc())  # started: null -> gc uses the mtime
        self.started = (await self.target.stat(self.path)).mtime
        await self.target.write_file(self.path, self._doc())
        self._last_ok = t0
        self._task = asyncio.create_task(self._beat(), name=f"lease-{self.writer_id}")
        log.debug("store.lease_registered", writer_id=self.writer_id, started=self.started, purpose=self.purpose)
        return self

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            if self._owner is not None and self._owner() is None:
                log.warning("store.lease_abandoned", writer_id=self.writer_id, purpose=self.purpose)
                self._task = None  # release() must not wait for ourselves
                await self.release()
                return
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Touch the lease file now (the background task does this every ``heartbeat_seconds``)."""
        t = self._clock()
        try:
            await self.target.touch(self.path)
        except NotFound:
            # Only gc removes lease files, and only long-stale ones: we lapsed.
            self._lapsed = self._lapsed or "its lease file was removed as stale"
            return
        except Exception as e:  # a target hiccup: the next beat may succeed
            log.warning("store.lease_heartbeat_failed", writer_id=self.writer_id, error=str(e))
            self._note_gap(self._clock())
            return
        self._note_gap(self._clock())  # the new mtime landed by now
        self._last_ok = t

    def _note_gap(self, now: float) -> None:
        if self._last_ok is not None and now - self._last_ok > self._limit():
            self._lapsed = self._lapsed or f"no heartbeat for {now - self._last_ok:.0f} s, lease {self.lease_seconds:.0f} s"

    def _limit(self) -> float:
        # Our monotonic clock and the target's may run at slightly different
        # rates, and an mtime lands somewhere inside the touch's round trip.
        return self.lease_seconds * 0.9 - 1.0

    def check(self) -> None:
        """Raise `LeaseLost` unless the lease has been live without a gap since `register`."""
        if self.started is None or self._last_ok is None:
            raise LeaseLost(self.writer_id, "it was never registered")
        if self.released:
            raise LeaseLost(self.writer_id, "it was released")
        self._note_gap(self._clock())
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._lapsed = self._lapsed or f"the heartbeat task stopped: {self._task.exception()!r}"
        if self._lapsed:
            raise LeaseLost(self.writer_id, self._lapsed)

    async def name_backup(self, backup_id: str) -> None:
        """Name the backup this lease protects once it is known (the orchestrator's
        lease starts before the backup has an id); gc then keeps that backup's
        unpublished directory while the lease lives."""
        if self.released or self.started is None or self.backup_id == backup_id:
            return
        self.backup_id = backup_id
        await self.target.write_file(self.path, self._doc())

    async def release(self) -> None:
        """Stop heartbeating and remove the lease file (idempotent)."""
        if self.released:
            return
        self.released = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.started is not None:
            try:
                await self.target.remove(self.path)
            except NotFound:
                pass
            except Exception as e:  # gc removes it once stale
                log.warning("store.lease_release_failed", writer_id=self.writer_id, error=str(e))

    async def __aenter__(self) -> "WriterLease":
        if self.started is None:
            await self.register()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.release()


@contextlib.asynccontextmanager
async def writer_lease(target: Target, **options) -> AsyncIterator[WriterLease]:
    """``async with writer_lease(target, purpose=..., vm_id=..., backup_id=...) as lease``."""
    lease = WriterLease(target, **options)
    await lease.register()
    try:
        yield lease
    finally:
        await lease.release()


# -- what gc sees ------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseInfo:
    name: str  # file name under .writers/
    mtime: float  # last heartbeat (target clock)
    started: float  # target clock; -inf when the file cannot be trusted
    lease_seconds: float
    vm_id: str | None = None
    backup_id: str | None = None
    valid: bool = True

    def live(self, now: float) -> bool:
        return now - self.mtime <= self.lease_seconds


def parse_lease(name: str, mtime: float, data: bytes | None) -> LeaseInfo:
    """A lease file as gc judges it. A file that is not a well-formed lease
    protects everything while it is fresh (``started`` = -inf): gc never
    guesses in favour of deleting."""
    bad = LeaseInfo(name, mtime, -math.inf, DEFAULT_LEASE_SECONDS, valid=False)
    if data is None:
        return bad
    try:
        doc = json.loads(data)
    except ValueError:
        return bad
    if not isinstance(doc, dict) or doc.get("format") != LEASE_FORMAT or doc.get("version") != LEASE_VERSION:
        return bad
    ls = doc.get("lease_seconds")
    st = doc.get("started")
    if isinstance(ls, bool) or not isinstance(ls, (int, float)) or not (1.0 <= ls <= MAX_LEASE_SECONDS):
        return bad
    if st is None:
        started = mtime  # registration in progress: nothing written yet, its first chunk comes later
    elif isinstance(st, bool) or not isinstance(st, (int, float)) or not math.isfinite(st):
        return bad
    else:
        started = min(float(st), mtime)
    vm, b = doc.get("vm_id"), doc.get("backup_id")
    return LeaseInfo(name, mtime, started, float(ls), vm if isinstance(vm, str) else None,
                     b if isinstance(b, str) else None)


async def read_leases(target: Target) -> list[LeaseInfo]:
    """Every lease file on the target (live or not), as `parse_lease` judges it."""
    try:
        entries = await target.scandir(WRITERS_DIR)
    except NotFound:
        return []
    out = []
    for e in entries:
        if e.is_dir or is_tmp_name(e.name):
            continue
        data: bytes | None = None
        try:
            data = await target.read_file(join(WRITERS_DIR, e.name), max_size=MAX_LEASE_FILE)
        except NotFound:
            continue  # released meanwhile
        except StoreError:  # too large, a symlink: untrusted
            data = None
        out.append(parse_lease(e.name, e.mtime, data))
    return out


@dataclass(frozen=True)
class Cutoff:
    """gc's decision of what is old enough to sweep."""

    now: float
    chunk_cutoff: float  # chunks with mtime >= this are kept
    oldest_start: float | None  # of the live writers, None if none
    live: tuple[LeaseInfo, ...]
    stale: tuple[LeaseInfo, ...]


def compute_cutoff(now: float, grace: float, margin: float, leases: list[LeaseInfo]) -> Cutoff:
    """``min(now - grace, oldest live writer's start - margin)``.

    ``now`` must be the target's clock taken *before* the leases were read:
    a writer registering after that has ``started >= now`` and every chunk it
    uses is younger than the cutoff anyway.
    """
    if grace < 0 or margin < 0:
        raise ValueError("grace and margin must be >= 0")
    live = tuple(x for x in leases if x.live(now))
    stale = tuple(x for x in leases if not x.live(now))
    cut = now - grace
    oldest = min((x.started for x in live), default=None)
    if oldest is not None:
        cut = min(cut, oldest - margin)
    return Cutoff(now, cut, oldest, live, stale)


# -- damage markers: what a committing incremental checks instead of touching --------
#
# A chunk set aside as damaged (``chunkstore.mark_bad``) leaves a marker
# ``.damaged/<digest>``, written before the rename. An incremental's commit
# lists that directory once (usually empty) and asks the writer's caller to
# re-send any inherited slot whose chunk is marked and absent: that rewrite
# heals every backup sharing it. gc removes a marker once the chunk is back
# or nothing references it.

DAMAGED_DIR = ".damaged"


def damaged_marker_path(digest: bytes) -> str:
    return join(DAMAGED_DIR, digest.hex())


async def mark_damaged(target: Target, digest: bytes) -> None:
    await target.write_file(damaged_marker_path(digest), b"")


async def damaged_markers(target: Target) -> list[tuple[bytes, float]]:
    """(digest, marker mtime) of every damage marker."""
    try:
        entries = await target.scandir(DAMAGED_DIR)
    except NotFound:
        return []
    out = []
    for e in entries:
        if not e.is_dir and len(e.name) == 64:
            try:
                out.append((bytes.fromhex(e.name), e.mtime))
            except ValueError:
                continue
    return out
