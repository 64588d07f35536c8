"""ovault's one retry helper, on tenacity.

Every place that tries an operation again after a failure uses `retrying`,
so backoff, jitter, limits and the log line look the same everywhere:

    async for attempt in retrying(what="engine vms.list", attempts=5,
                                  retry_on=EngineUnavailable):
        with attempt:
            vms = await call()

The delay before try n+1 is ``first * 2**(n-1)``, capped at ``cap``, times a
random factor in [0.5, 1.5) when ``jitter`` (so replicas that failed together
do not retry together). ``attempts=None`` retries until the operation
succeeds or the task is cancelled (a supervisor). An exception that is not a
``retry_on`` ends the loop at once; when the attempts run out, the last
exception is raised as it was (not a tenacity ``RetryError``).

This module lives in the leaf package (`imageio_ext`) so that the
orchestrator, the machines and the mover can all use it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

import structlog
import tenacity

__all__ = ["retrying", "Backoff"]

log = structlog.get_logger("ovault.retry")


class Backoff:
    """Exponential backoff for tenacity's ``wait=``: ``first * 2**(n-1)`` capped, with jitter."""

    def __init__(self, first: float = 0.25, cap: float = 8.0, jitter: bool = True,
                 rand: Callable[[], float] = random.random):
        if first < 0 or cap < first:
            raise ValueError("backoff needs 0 <= first <= cap")
        self.first, self.cap, self.jitter, self.rand = first, cap, jitter, rand

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failed try (1-based)."""
        d = min(self.cap, self.first * 2 ** (failures - 1))
        return d * (0.5 + self.rand()) if self.jitter else d

    def __call__(self, state: tenacity.RetryCallState) -> float:
        return self.delay(state.attempt_number)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)  # looked up at each call, so a test may patch asyncio.sleep


def retrying(*, what: str, attempts: int | None, retry_on: type[BaseException] | tuple = Exception,
             retry_if: Callable[[BaseException], bool] | None = None, first: float = 0.25, cap: float = 8.0, jitter: bool = True,
             sleep: Callable[[float], Awaitable[Any]] | None = None,
             on_retry: Callable[[BaseException], Any] | None = None,
             logger: Any = None, level: str = "warning", **context: Any) -> tenacity.AsyncRetrying:
    """An async retry loop (see the module docstring). ``retry_if``, when given,
    decides instead of ``retry_on`` which exceptions are worth another try.
    ``what`` and ``context`` go into the log line written before each wait;
    ``on_retry(error)`` runs then too (drop a broken connection, count)."""
    if attempts is not None and attempts < 1:
        raise ValueError("attempts must be >= 1 (or None: until it works)")
    lg = logger or log

    def before_sleep(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        getattr(lg, level)(f"{what} failed, retrying", attempt=state.attempt_number,
                           delay=round(state.next_action.sleep, 2) if state.next_action else None,
                           error=str(err) or type(err).__name__, **context)
        if on_retry is not None and err is not None:
            on_retry(err)

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts) if attempts is not None else tenacity.stop_never,
        wait=Backoff(first, cap, jitter),
        retry=(tenacity.retry_if_exception(retry_if) if retry_if is not None
               else tenacity.retry_if_exception_type(retry_on)),
        sleep=sleep or _sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
