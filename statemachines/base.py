"""What every VM machine shares: the driver loop, persistence, cancel.

Design (conventions.md, "State machines"):
- `transitions.extensions.asyncio.AsyncMachine` holds the states and the
  legal transitions (`auto_transitions=False`). Each transition first writes
  itself to the catalog as a compare-and-swap (`conditions=[_persist]`); if
  the swap loses, another replica owns the machine and this one stops.
- One coroutine per state does that state's work and returns the trigger to
  fire next; each machine binds them in its `STEPS` table (state → step),
  checked complete when the class is made. Steps are idempotent: each first looks at what the journal says
  was already created (`resources`) and at the engine, so `run()` after a
  restart simply re-enters the persisted state's step (explicit resume).
- Long work runs in the step coroutine, never in `on_enter` callbacks, so a
  trigger never cancels it by accident.
- Errors in a step go to `cleanup`; cancellation goes to `cleanup` too, with
  outcome `canceled`. `cleanup` undoes what `resources` records and ends in
  `failed` or `canceled`.
"""
from __future__ import annotations

import asyncio
import contextlib
import traceback
from typing import Any, Awaitable, Callable, ClassVar, Protocol

import structlog
from transitions.extensions.asyncio import AsyncMachine

from .lifecycle import CLEANUP, QUEUED, TERMINAL, machine_flow, machine_states
from .engine import Engine
from .ports import Deps

log = structlog.get_logger("ovault.machine")


class Journal(Protocol):
    """The machine's durable record (the catalog row); `resources` is the
    machine's record (`resources.BackupResources` / `RestoreResources`)."""
    state: str
    resources: dict[str, Any]

    async def transition(self, from_state: str, to_state: str, error: str | None,
                         event: tuple[str, dict]) -> bool:
        """Compare-and-swap the state and write `event` (type, payload) in the
        same transaction; False if the swap lost (nothing is written then)."""
    async def record(self, patch: dict) -> None: ...
    async def progress(self, bytes_done: int, bytes_total: int, disks: dict) -> None: ...
    async def event(self, type_: str, payload: dict) -> None: ...


class StepFailed(Exception):
    """A step failed with a message meant for the operator."""


class Canceled(Exception):
    pass


class LostOwnership(Exception):
    """The compare-and-swap lost: another replica owns this machine now."""


class CatalogUnreachable(LostOwnership):
    """The catalog could not be reached for a write the machine needs.

    Not a failure of the step: the machine stops here as if it had lost
    ownership (nothing was decided, nothing is undone); the job's lease lets
    a runner resume it from its persisted state once the catalog answers
    (orchestrator/jobs/outage.py). The catalog ports raise it."""


class VmMachine:
    """Base of BackupMachine and RestoreMachine.

    A subclass declares its `WORK_STATES` in order; its `STATES` and forward
    `FLOW` follow from them (`lifecycle`). `STEPS` binds every non-final
    state to the coroutine that does its work (cleanup included)."""
    kind: ClassVar[str] = "machine"
    WORK_STATES: ClassVar[tuple[str, ...]] = ()
    STATES: ClassVar[tuple[str, ...]] = ()
    FLOW: ClassVar[tuple[tuple[str, str, str], ...]] = ()  # (trigger, source, dest)
    STEPS: ClassVar[dict[str, Callable[[Any], Awaitable[str | None]]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.STATES = machine_states(cls.WORK_STATES)
        cls.FLOW = machine_flow(cls.WORK_STATES)
        unbound = set(cls.STATES) - set(TERMINAL) - set(cls.STEPS)
        unknown = set(cls.STEPS) - set(cls.STATES)
        if unbound or unknown:
            raise TypeError(f"{cls.__name__}.STEPS: no step for {sorted(unbound)}, "
                            f"unknown states {sorted(unknown)}")

    def __init__(self, journal: Journal, deps: Deps, *, vm_id: str, job_id: str, machine_id: str):
        self.journal = journal
        self.deps = deps  # ports.Deps: engine, mover, catalog, store, limits
        self.disk_progress: dict[str, list[int]] = {}  # disk -> [bytes done, bytes total]
        self.vm_id, self.job_id, self.machine_id = vm_id, job_id, machine_id
        self.correlation_id = f"ovault-{job_id}"
        self.error: str | None = None
        self.cancel_event = asyncio.Event()
        self.wake: asyncio.Event | None = None
        self.log = log.bind(job_id=job_id, vm_id=vm_id, machine_id=machine_id)
        transitions = [dict(trigger=t, source=s, dest=d, conditions=["_persist"]) for t, s, d in self.FLOW]
        transitions += [dict(trigger="fail", source=list(self.WORK_STATES), dest=CLEANUP,
                             conditions=["_persist"]),
                        dict(trigger="cancel", source=[*self.WORK_STATES, QUEUED], dest=CLEANUP,
                             conditions=["_persist"]),
                        dict(trigger="cleaned_failed", source=CLEANUP, dest="failed",
                             conditions=["_persist"]),
                        dict(trigger="cleaned_canceled", source=CLEANUP, dest="canceled",
                             conditions=["_persist"])]
        self.machine = AsyncMachine(model=self, states=list(self.STATES), transitions=transitions,
                                    initial=journal.state, auto_transitions=False,
                                    send_event=True, queued=False)

    # --- persistence -------------------------------------------------------------------
    async def _persist(self, event) -> bool:
        src, dst = event.transition.source, event.transition.dest
        # The state and its `<kind>.state` event commit together: a notice is
        # never lost to a crash between them, nor sent for a swap that lost.
        ok = await self.journal.transition(
            src, dst, self.error if dst in (CLEANUP, "failed") else None,
            (f"{self.kind}.state", {"from": src, "to": dst, "error": self.error}))
        if not ok:
            raise LostOwnership(f"machine {self.machine_id}: {src} -> {dst} lost")
        self.log.info("state", frm=src, to=dst, error=self.error)
        return True

    @property
    def res(self) -> dict[str, Any]:
        return self.journal.resources

    async def record(self, **patch):
        await self.journal.record(patch)

    # --- driver --------------------------------------------------------------------------
    async def run(self) -> str:
        """Drive the machine from its persisted state to a terminal one."""
        waker = getattr(getattr(self, "deps", None), "waker", None)
        sub = (waker.subscribe([self.correlation_id, f"vm:{self.vm_id}"]) if waker
               else contextlib.nullcontext(None))
        with sub as wake:
            self.wake = wake
            return await self._drive()

    async def wait(self, check, **kw):
        return await wait_until(check, wake=self.wake, **kw)

    async def wait_transferring(self, transfer_id: str):
        """Wait for an image transfer to reach `transferring` (what the SDK's
        helpers do); any other phase than initializing/resuming is a failure."""
        async def check():
            t = await self.deps.engine.get_transfer(transfer_id)
            if t is None:
                raise StepFailed(f"image transfer {transfer_id} vanished")
            if t.phase == "transferring":
                return t
            if t.phase not in ("initializing", "resuming"):
                raise StepFailed(f"image transfer {transfer_id} is {t.phase}")
            return None
        return await self.wait(check, timeout=self.deps.timeouts.transfer,
                               interval=self.deps.timeouts.transfer_poll,
                               what=f"image transfer {transfer_id}")

    async def _drive(self) -> str:
        while self.state not in TERMINAL:
            released = self.res.get("engine_released")
            if released and self.state in self.WORK_STATES[:-1]:
                # While the catalog was unreachable the runner released what
                # this machine held in the engine: it cannot go on; cleanup
                # finds those objects gone and records the outcome. (In the
                # last work state the engine's part is done: it completes.)
                self.error = released.get("error") or "engine objects released"
                await self.record(outcome="failed", error=self.error)
                await self.trigger("fail")
                continue
            if self.state == CLEANUP:
                await self._run_cleanup()
                continue
            if self.cancel_event.is_set():
                await self.trigger("cancel")
                continue
            step = self.STEPS[self.state]
            try:
                trigger = await self._cancellable(step(self))
            except Canceled:
                self.res.setdefault("outcome", "canceled")
                await self.record(outcome="canceled")
                await self.trigger("cancel")
                continue
            except LostOwnership:
                raise
            except Exception as e:  # any failure of a step ends in cleanup
                self.error = str(e) or type(e).__name__
                self.log.warning("step failed", state=self.state, error=self.error,
                                 tb=traceback.format_exc(limit=6))
                await self.record(outcome="failed", error=self.error)
                await self.trigger("fail")
                continue
            await self.trigger(trigger)
        return self.state

    async def _cancellable(self, coro):
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(self.cancel_event.wait())
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
            raise Canceled()
        finally:
            waiter.cancel()

    async def _run_cleanup(self):
        outcome = self.res.get("outcome") or ("canceled" if self.cancel_event.is_set() else "failed")
        self.error = self.error or self.res.get("error")
        try:
            await self.STEPS[CLEANUP](self)
        except LostOwnership:
            raise
        except Exception as e:
            # Cleanup failures are loud: they leave something in the engine.
            msg = f"cleanup incomplete: {e}"
            self.log.error("cleanup failed", error=str(e))
            self.error = f"{self.error}; {msg}" if self.error else msg
            await self.journal.event(f"{self.kind}.cleanup_failed", {"error": str(e)})
        await self.trigger("cleaned_canceled" if outcome == "canceled" else "cleaned_failed")

    @property
    def engine(self) -> Engine:
        return self.deps.engine

    async def step_queued(self):
        return "start"

    def request_cancel(self):
        self.cancel_event.set()


FIRST_RECHECK = 0.25  # seconds before the first re-check of a wait


async def wait_until(check, *, timeout: float, interval: float = 1.0, what: str = "condition",
                     wake: asyncio.Event | None = None):
    """Poll `check()` (async) until it returns a truthy value.

    `wake` (set by the engine event poller when an event names this job or VM)
    ends a wait early; the interval is the fallback when no event comes. The
    first re-checks come sooner (FIRST_RECHECK, doubling up to `interval`): most
    engine steps end within a second, and a job is a chain of such waits.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = min(FIRST_RECHECK, interval)
    while True:
        v = await check()
        if v:
            return v
        if loop.time() > deadline:
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        if wake is None:
            await asyncio.sleep(pause)
        else:
            try:
                await asyncio.wait_for(wake.wait(), pause)
            except asyncio.TimeoutError:
                pass
            wake.clear()
        pause = min(pause * 2, interval)

