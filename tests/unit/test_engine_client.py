"""EngineClient plumbing without an engine: what a cancelled caller leaves behind."""
from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from orchestrator.config import Engine
from orchestrator.engine.client import EngineClient


async def test_cancel_waits_for_a_request_already_on_its_way():
    """A machine cancelled during POST /snapshots must not run its cleanup
    before that POST has landed: cleanup looks the snapshot up by description."""
    client = EngineClient(Engine(workers=1))
    started, landed = threading.Event(), []

    def slow_post():
        started.set()
        time.sleep(0.5)
        landed.append(time.monotonic())
        return "snapshot-id"

    task = asyncio.create_task(client._run(slow_post))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    t0 = time.monotonic()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the caller's cancellation was swallowed")
    assert landed and landed[0] <= time.monotonic()
    assert time.monotonic() - t0 >= 0.3  # it waited for the request, not just returned
    await client.close()


async def test_cancel_drops_a_request_not_yet_started():
    client = EngineClient(Engine(workers=1))
    gate, busy, ran = threading.Event(), threading.Event(), []

    def block():
        busy.set()
        return gate.wait(5)
    blocker = asyncio.create_task(client._run(block))
    await asyncio.to_thread(busy.wait, 5)  # the only worker is taken
    queued = asyncio.create_task(client._run(lambda: ran.append(1)))
    await asyncio.sleep(0)  # queued behind it
    queued.cancel()
    try:
        await queued
    except asyncio.CancelledError:
        pass
    gate.set()
    assert await blocker is True
    # One worker, first come first served: once a later request has run, the
    # cancelled one would have run before it.
    assert await client._run(lambda: "later") == "later"
    assert ran == []  # never sent
    await client.close()


async def test_errors_of_a_cancelled_request_are_not_reported_twice():
    """The caller gets its cancellation, not the request's error, and the error
    is not left for asyncio to report as "never retrieved" either."""
    loop = asyncio.get_running_loop()
    reported = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        client = EngineClient(Engine(workers=1))
        started = threading.Event()

        def failing():
            started.set()
            time.sleep(0.2)
            raise RuntimeError("engine said no")

        task = asyncio.create_task(client._run(failing))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        await client.close()
        del task
        gc.collect()
        await asyncio.sleep(0)
        assert [c.get("message") for c in reported] == []
    finally:
        loop.set_exception_handler(previous)
