"""Run a coroutine over items with a fixed number of workers."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Iterable, TypeVar

T = TypeVar("T")


async def run_workers(fn: Callable[[T], Awaitable[None]], items: Iterable[T], workers: int) -> None:
    """``fn(item)`` for every item, ``workers`` at a time, in order of start.

    The first error cancels the other workers and is raised as itself (not
    an ExceptionGroup: callers map it to one copy error). Cancelling the
    caller cancels the workers.
    """
    it = iter(items)

    async def worker() -> None:
        for item in it:  # one shared iterator: each item goes to one worker
            await fn(item)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, workers))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
