"""Copy jobs of one mover: queued -> running -> succeeded | failed | canceled.

Design notes:

- One asyncio task per job; at most ``max_copies`` run (a semaphore), the
  rest wait in ``queued``. Cancelling a job cancels its task wherever it is.
- A job with a client-chosen id is idempotent: creating it again with the
  same request returns the existing job; with a different request it is a
  conflict.
- Stores are opened once per URL and shared by the jobs that use them, so
  concurrent copies of cloned disks also share one write per chunk.
- Finished jobs stay for ``keep_finished`` seconds, then are forgotten.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import structlog

from ..copy import CopyResult, CopySpec, Progress, run_copy
from ..copy.direct import STORE_OPTIONS
from ..errors import Conflict, OvaultError, os_error_text
from ..store import Store, StoreKey
from .config import MoverConfig

log = structlog.get_logger("ovault.mover")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
FINAL = (SUCCEEDED, FAILED, CANCELED)


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z") if t else None


class JobConflict(Conflict):
    """A create with a known copy id but a different request (the id is the idempotency key)."""

    msg = "copy {self.job_id} exists with a different request"

    def __init__(self, job_id: str):
        super().__init__(job_id=job_id)


@dataclass
class Job:
    id: str
    spec: CopySpec
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    ended_mono: float | None = None
    progress: Progress | None = None
    result: CopyResult | None = None
    error: dict | None = None
    task: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    store_key: StoreKey | None = field(default=None, repr=False)  # encrypted store: from the request, never shown

    def touch(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def to_dict(self) -> dict:
        p = self.progress
        s = self.spec
        return {
            "id": self.id,
            "op": s.op,
            "state": self.state,
            "vm_id": s.vm_id,
            "backup_id": s.backup_id,
            "disk_id": s.disk_id,
            "parent_backup_id": s.parent_backup_id,
            "incremental": s.incremental,
            "store": s.store,
            "created": _iso(self.created),
            "started": _iso(self.started),
            "ended": _iso(self.ended),
            "bytes_done": p.bytes_done if p else 0,
            "bytes_total": p.bytes_total if p else (s.size or 0),
            "bytes_read": p.bytes_read if p else 0,
            "bytes_written": p.bytes_written if p else 0,
            "rate": p.rate if p and self.state == RUNNING else 0.0,
            "error": self.error,
            "result": self.result.to_dict() if self.result else None,
        }


class JobManager:
    def __init__(self, config: MoverConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self._slots = asyncio.Semaphore(config.max_copies)
        self._stores: dict[str, Store] = {}
        self._store_lock = asyncio.Lock()

    # -- jobs ------------------------------------------------------------------

    def create(self, spec: CopySpec, job_id: str | None = None, *,
               store_key: StoreKey | None = None) -> tuple[Job, bool]:
        self._expire()
        if job_id is not None:
            job = self.jobs.get(job_id)
            if job is not None:
                if job.spec != spec:
                    raise JobConflict(job_id)
                return job, False
        job = Job(job_id or str(uuid.uuid4()), spec, store_key=store_key)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"copy-{job.id}")
        return job, True

    def get(self, job_id: str) -> Job | None:
        self._expire()
        return self.jobs.get(job_id)

    def all(self) -> list[Job]:
        """Every copy still kept (running, queued, or finished less than keep_finished ago)."""
        self._expire()
        return list(self.jobs.values())

    def cancel(self, job: Job) -> None:
        if job.state not in FINAL and job.task is not None:
            job.task.cancel()

    def counts(self) -> dict[str, int]:
        out = {QUEUED: 0, RUNNING: 0}
        for j in self.jobs.values():
            if j.state in out:
                out[j.state] += 1
        return out

    def _expire(self) -> None:
        now = self.clock()
        for jid in [j.id for j in self.jobs.values()
                    if j.ended_mono is not None and now - j.ended_mono > self.config.keep_finished]:
            del self.jobs[jid]

    async def _run(self, job: Job) -> None:
        s = job.spec
        lg = log.bind(copy_id=job.id, op=s.op, vm_id=s.vm_id, backup_id=s.backup_id, disk_id=s.disk_id)
        try:
            async with self._slots:
                job.state, job.started = RUNNING, time.time()
                job.touch()
                lg.info("copy.started")

                def progress(p: Progress) -> None:
                    job.progress = p
                    job.touch()

                store = await self.store(s.store)
                if job.store_key is not None:  # an encrypted store: checked against its fingerprint
                    store.set_key(job.store_key)
                job.result = await run_copy(
                    s, store=store, local_socket=self.config.imageio_socket or None,
                    requests=self.config.requests_per_copy, progress=progress, clock=self.clock,
                    # this host's daemon only, with the CA of the mover's own configuration
                    imageio_ca=self.config.imageio_ca or None, local_only=not self.config.imageio_url,
                    control_socket=self.config.imageio_control_socket or None)
                job.state = SUCCEEDED
                lg.info("copy.succeeded", bytes_read=job.result.bytes_read, new_chunks=job.result.new_chunks,
                        seconds=job.result.seconds, transport=job.result.transport)
        except asyncio.CancelledError:
            job.state = CANCELED
            job.error = {"code": "canceled", "message": "The copy was canceled"}
            lg.info("copy.canceled")
        except OvaultError as e:
            job.state, job.error = FAILED, e.to_dict()
            lg.warning("copy.failed", code=e.code, error=str(e))
        except Exception as e:  # a bug: keep the mover alive, report what it was, not where
            job.state = FAILED
            what = os_error_text(e) if isinstance(e, OSError) else type(e).__name__
            job.error = {"code": "internal_error", "message": f"Internal error ({what}); see the mover log"}
            lg.exception("copy.crashed")
        finally:
            job.ended, job.ended_mono = time.time(), self.clock()
            job.touch()

    # -- stores ------------------------------------------------------------------

    async def store(self, url: str) -> Store:
        """The shared store at ``url`` (an encrypted store's key comes with each job)."""
        async with self._store_lock:
            st = self._stores.get(url)
            if st is None:
                # one store (and its CPU and I/O pools) per target for all copies
                st = self._stores[url] = await Store.open(url, **STORE_OPTIONS)
            return st

    async def close(self) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task and not j.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for st in self._stores.values():
            await st.close()
        self._stores.clear()
