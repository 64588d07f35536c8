"""The engine's event log as a wake-up source for waiting machines.

One poller per replica reads `GET /events?from=<last index>` and wakes the
machines waiting on anything an event names: its correlation id (every call
ovault makes carries `ovault-<job id>`) or its VM. Machines still poll the
entity they wait on at their own interval, so a missed event (the engine's log
is best effort) only costs that interval, never a hung job.
"""
from __future__ import annotations

import asyncio
import contextlib

import structlog

log = structlog.get_logger("ovault.engine.events")


class Waker:
    """Keyed wake-ups: `subscribe(keys)` gives an Event that `notify` sets."""

    def __init__(self):
        self._subs: dict[str, set[asyncio.Event]] = {}
        self.notified = 0

    @contextlib.contextmanager
    def subscribe(self, keys):
        ev = asyncio.Event()
        keys = [k for k in keys if k]
        for k in keys:
            self._subs.setdefault(k, set()).add(ev)
        try:
            yield ev
        finally:
            for k in keys:
                s = self._subs.get(k)
                if s:
                    s.discard(ev)
                    if not s:
                        del self._subs[k]

    def notify(self, keys):
        for k in keys:
            for ev in self._subs.get(k, ()):
                ev.set()
                self.notified += 1


class EventPoller:
    def __init__(self, engine, waker: Waker, interval: float = 1.0):
        self.engine, self.waker, self.interval = engine, waker, interval
        self.last: int | None = None

    async def run(self):
        failures = 0
        while True:
            try:
                if self.last is None:
                    newest = await self.engine.events_since(None)
                    self.last = newest[0].index if newest else 0
                else:
                    events = await self.engine.events_since(self.last)
                    for e in events:
                        self.last = max(self.last, e.index or 0)
                        keys = [e.correlation_id] if e.correlation_id else []
                        if e.vm is not None and e.vm.id:
                            keys.append(f"vm:{e.vm.id}")
                        self.waker.notify(keys)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the log is a hint; polling carries on without it
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("event polling failed; entity polling continues", error=str(e),
                                failures=failures)
            await asyncio.sleep(self.interval)
