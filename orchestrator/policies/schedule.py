"""When a policy fires: a 5-field cron expression read in an IANA time zone.

croniter does the calendar arithmetic; this module validates (clear messages for
the API's 422s) and answers the scheduler's questions with time zone aware
datetimes: the next fire times, the fire times inside a window, the interval
that the protection status measures against. A time that does not exist on a DST
spring-forward day fires at the first existing minute after it; a repeated
autumn hour fires once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

from ..errors import Invalid

__all__ = ["Schedule", "parse_timezone", "validate_cron"]

MAX_LEN = 200


def validate_cron(expr: object) -> str:
    if not isinstance(expr, str) or not expr.strip() or len(expr) > MAX_LEN:
        raise Invalid("schedule must be a 5-field cron expression such as '0 2 * * *'")
    fields = expr.split()
    if len(fields) != 5:
        raise Invalid(f"schedule {expr!r} has {len(fields)} fields; it needs 5 "
                      f"(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'")
    try:
        it = croniter(" ".join(fields), datetime(2000, 1, 1, tzinfo=timezone.utc))
    except (ValueError, KeyError) as e:   # CroniterBadCronError is a ValueError
        raise Invalid(f"schedule {expr!r} is not a valid cron expression: {e}") from None
    try:
        it.get_next(datetime)
    except ValueError:                    # CroniterBadDateError: e.g. '0 0 31 2 *'
        raise Invalid(f"schedule {expr!r} never fires (no such date)") from None
    return " ".join(fields)


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_timezone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name \
            or name.startswith("/"):
        raise Invalid(f"timezone must be an IANA time zone name such as 'Europe/Paris', "
                      f"got {name!r}")
    if name not in _zones():
        raise Invalid(f"unknown time zone {name!r} (use an IANA name such as "
                      f"'Europe/Paris' or 'UTC')")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise Invalid(f"unknown time zone {name!r}") from None


@dataclass(frozen=True)
class Schedule:
    cron: str
    tz: ZoneInfo

    @classmethod
    def parse(cls, cron: object, tz: object) -> "Schedule":
        return cls(validate_cron(cron), tz if isinstance(tz, ZoneInfo) else parse_timezone(tz))

    def _iter(self, start: datetime) -> croniter:
        if start.tzinfo is None:
            raise ValueError("start must be time zone aware")
        return croniter(self.cron, start.astimezone(self.tz))

    def next_after(self, at: datetime) -> datetime:
        """The first fire time strictly after `at` (in UTC)."""
        return self._iter(at).get_next(datetime).astimezone(timezone.utc)

    def previous(self, at: datetime) -> datetime:
        """The last fire time at or before `at` (in UTC)."""
        t = self._iter(at + timedelta(seconds=1)).get_prev(datetime)
        return t.astimezone(timezone.utc)

    def next_times(self, after: datetime, count: int) -> list[datetime]:
        it = self._iter(after)
        return [it.get_next(datetime).astimezone(timezone.utc) for _ in range(count)]

    def between(self, start: datetime, end: datetime, *, limit: int = 10_000) -> Iterator[datetime]:
        """Fire times t with start < t <= end, oldest first (at most `limit`)."""
        it = self._iter(start)
        for _ in range(limit):
            t = it.get_next(datetime).astimezone(timezone.utc)
            if t > end:
                return
            yield t

    def interval(self, at: datetime) -> timedelta:
        """The gap between the fire times around `at`: what a VM's last success is
        measured against (a weekday-only schedule has a longer gap on Mondays)."""
        return self.next_after(at) - self.previous(at)
