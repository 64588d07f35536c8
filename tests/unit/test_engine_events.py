"""The event poller wakes machines waiting on what an event names.

The poller talks to the engine through the SDK (`EngineClient.events_since`,
pycurl underneath), not aiohttp, so aioresponses cannot script it; a fake
engine stands in here, and tests/e2e/test_sandbox_engine.py reads the real
event log of the simulator. The tests wait for what the poller has done
(`until`), never for a fixed time."""
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
        self.failed_polls = 0

    async def events_since(self, index):
        if self.fail:
            self.failed_polls += 1
            raise ConnectionError("engine down")
        if index is None:
            return [max(self.events, key=lambda e: e.index)]
        return [e for e in self.events if e.index > index]


async def until(cond, timeout: float = 5.0):
    """Let the loop run until `cond()` holds (each turn yields to the poller)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


async def test_an_event_for_the_job_ends_a_wait_long_before_its_poll_interval():
    engine, waker = Engine(), Waker()
    p = EventPoller(engine, waker, interval=0.02)
    poller = asyncio.create_task(p.run())
    done = {"v": False}
    checks = []

    async def check():
        checks.append(time.monotonic())
        return done["v"]
    try:
        await until(lambda: p.last == 1)  # the poller has read the newest index
        with waker.subscribe(["ovault-job1", "vm:vm1"]) as wake:
            t0 = time.monotonic()
            waiter = asyncio.create_task(wait_until(check, timeout=30, interval=10, wake=wake))
            await until(lambda: len(checks) == 1)  # the waiter checked once and now sleeps its 10 s
            done["v"] = True
            engine.events.append(NS(index=2, correlation_id="ovault-job1", vm=None))
            assert await asyncio.wait_for(waiter, 2) is True
            assert time.monotonic() - t0 < 1.0  # not the 10 s poll interval
            assert len(checks) == 2
        assert waker._subs == {}  # unsubscribed
    finally:
        poller.cancel()


async def test_events_about_other_vms_do_not_wake_and_failures_do_not_stop_polling():
    engine, waker = Engine(), Waker()
    p = EventPoller(engine, waker, interval=0.02)
    poller = asyncio.create_task(p.run())
    try:
        await until(lambda: p.last == 1)
        with waker.subscribe(["vm:mine"]) as wake:
            engine.events.append(NS(index=2, correlation_id="x", vm=NS(id="other")))
            await until(lambda: p.last == 2)  # read, and it named another VM
            assert not wake.is_set() and waker.notified == 0
            engine.fail = True
            await until(lambda: engine.failed_polls >= 3)  # several polls failed in a row
            engine.fail = False
            engine.events.append(NS(index=3, correlation_id=None, vm=NS(id="mine")))
            await asyncio.wait_for(wake.wait(), 2)
            assert p.last == 3 and waker.notified == 1
    finally:
        poller.cancel()


async def test_a_wait_rechecks_soon_then_backs_off_to_its_interval():
    checks = []

    async def check():
        checks.append(time.monotonic())
        return len(checks) == 5
    t0 = time.monotonic()
    assert await wait_until(check, timeout=30, interval=0.8) is True
    gaps = [round(b - a, 2) for a, b in zip(checks, checks[1:])]
    # 0.25, 0.5, then the 0.8 s interval
    assert [g >= x - 0.02 for g, x in zip(gaps, (0.25, 0.5, 0.8, 0.8))] == [True] * 4, gaps
    assert gaps[0] < 0.5 and gaps[1] < 0.75, gaps
    assert time.monotonic() - t0 < 3.5
