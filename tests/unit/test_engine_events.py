"""The event poller wakes machines waiting on what an event names."""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace as NS

from orchestrator.engine.events import EventPoller, Waker
from statemachines.base import wait_until


class Engine:
    def __init__(self):
        self.events = [NS(index=1, correlation_id=None, vm=None)]
        self.fail = False

    async def events_since(self, index):
        if self.fail:
            raise ConnectionError("engine down")
        if index is None:
            return [max(self.events, key=lambda e: e.index)]
        return [e for e in self.events if e.index > index]


async def test_an_event_for_the_job_ends_a_wait_long_before_its_poll_interval():
    engine, waker = Engine(), Waker()
    poller = asyncio.create_task(EventPoller(engine, waker, interval=0.02).run())
    done = {"v": False}
    checks = []

    async def check():
        checks.append(time.monotonic())
        return done["v"]
    try:
        await asyncio.sleep(0.05)  # the poller has read the newest index
        with waker.subscribe(["ovault-job1", "vm:vm1"]) as wake:
            t0 = time.monotonic()
            waiter = asyncio.create_task(wait_until(check, timeout=30, interval=10, wake=wake))
            await asyncio.sleep(0.05)
            done["v"] = True
            engine.events.append(NS(index=2, correlation_id="ovault-job1", vm=None))
            assert await asyncio.wait_for(waiter, 2) is True
            assert time.monotonic() - t0 < 1.0  # not the 10 s poll interval
        assert waker._subs == {}  # unsubscribed
    finally:
        poller.cancel()


async def test_events_about_other_vms_do_not_wake_and_failures_do_not_stop_polling():
    engine, waker = Engine(), Waker()
    poller = asyncio.create_task(EventPoller(engine, waker, interval=0.02).run())
    try:
        await asyncio.sleep(0.05)
        with waker.subscribe(["vm:mine"]) as wake:
            engine.events.append(NS(index=2, correlation_id="x", vm=NS(id="other")))
            await asyncio.sleep(0.1)
            assert not wake.is_set()
            engine.fail = True
            await asyncio.sleep(0.1)
            engine.fail = False
            engine.events.append(NS(index=3, correlation_id=None, vm=NS(id="mine")))
            await asyncio.wait_for(wake.wait(), 2)
    finally:
        poller.cancel()
