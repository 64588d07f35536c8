"""The one retry helper (tenacity): backoff, limits, what is retried, what is logged."""
from __future__ import annotations

import pytest
import structlog

from imageio_ext.retry import Backoff, retrying


class Flaky:
    def __init__(self, failures: int, exc: type[BaseException] = ConnectionError):
        self.failures, self.exc, self.calls = failures, exc, 0

    async def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "done"


async def run(op, sleeps, **kw):
    async def sleep(d):
        sleeps.append(d)
    async for attempt in retrying(what="op", sleep=sleep, **kw):
        with attempt:
            return await op()


async def test_retries_with_exponential_backoff_until_it_works():
    sleeps: list[float] = []
    op = Flaky(4)
    assert await run(op, sleeps, attempts=6, first=0.1, cap=0.5, jitter=False) == "done"
    assert op.calls == 5 and sleeps == [0.1, 0.2, 0.4, 0.5]


async def test_gives_up_after_the_attempts_with_the_last_error_itself():
    sleeps: list[float] = []
    op = Flaky(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        await run(op, sleeps, attempts=3, first=1, cap=8, jitter=False)
    assert op.calls == 3 and sleeps == [1, 2]


async def test_other_errors_are_not_retried():
    sleeps: list[float] = []
    op = Flaky(1, exc=KeyError)
    with pytest.raises(KeyError):
        await run(op, sleeps, attempts=5, retry_on=ConnectionError)
    assert op.calls == 1 and sleeps == []


async def test_without_a_limit_it_retries_until_it_works():
    sleeps: list[float] = []
    op = Flaky(30)
    assert await run(op, sleeps, attempts=None, first=0.5, cap=4, jitter=False) == "done"
    assert op.calls == 31 and sleeps[:4] == [0.5, 1, 2, 4] and set(sleeps[3:]) == {4}


def test_jitter_stays_within_half_and_one_and_a_half_times():
    assert Backoff(1, 8, rand=lambda: 0.0).delay(3) == 2.0  # 4 s halved
    assert Backoff(1, 8, rand=lambda: 0.999).delay(3) == pytest.approx(4 * 1.499)
    assert Backoff(1, 8, rand=lambda: 0.5).delay(10) == 8.0
    with pytest.raises(ValueError):
        Backoff(2, 1)
    with pytest.raises(ValueError):
        retrying(what="x", attempts=0)


async def test_each_wait_is_logged_with_what_and_why():
    sleeps: list[float] = []
    with structlog.testing.capture_logs() as logs:
        await run(Flaky(2), sleeps, attempts=3, first=0.25, cap=1, jitter=False, vm_id="vm-1")
    assert [(x["event"], x["attempt"], x["delay"], x["error"], x["vm_id"], x["log_level"]) for x in logs] == [
        ("op failed, retrying", 1, 0.25, "failure 1", "vm-1", "warning"),
        ("op failed, retrying", 2, 0.5, "failure 2", "vm-1", "warning"),
    ]


async def test_on_retry_runs_before_each_wait_only():
    seen: list[str] = []
    sleeps: list[float] = []
    with pytest.raises(ConnectionError):
        await run(Flaky(5), sleeps, attempts=3, jitter=False, on_retry=lambda e: seen.append(str(e)))
    assert seen == ["failure 1", "failure 2"] and len(sleeps) == 2
