"""Retention: which backups of one VM a policy keeps, and why (pure, no I/O).

The semantics are Proxmox Backup Server's prune options, reproduced exactly:

1. Backups are walked newest first. Only *successful* backups take part in the
   keep options. A failed backup is pruned, except the newest failed one when it
   is newer than every successful backup (rule `keep-partial`: the most recent
   attempt is kept for inspection). A backup still running is never touched
   (rule `running`).
2. The options run in the order keep_last, keep_hourly, keep_daily,
   keep_weekly, keep_monthly, keep_yearly. Each option maps every backup to
   its period (keep_last: the backup itself; hourly: local hour; daily: local
   date; weekly: ISO week-year and week, Monday to Sunday; monthly: year and
   month; yearly: year) in the policy's time zone.
3. An option first notes the periods already holding a backup kept by an
   earlier option: those periods are covered and do not count again. It then
   walks the backups that no earlier option has decided on (kept or passed
   over), newest first: the first backup of a period not yet covered is kept
   (that period consumes one of the option's N slots); a later (older) backup
   of a period this option has already taken is passed over, and stays passed
   over for the following options; the walk stops at the first new period once
   N periods are taken. Periods without backups do not count.
4. A protected backup is never pruned (rule `protected`). Like PBS, it does not
   consume a slot and does not cover its period: the options count past it.
5. Everything not kept is pruned. When no option is above 0, everything is kept
   (rule `keep-all`), as PBS's prune command does when nothing would be kept by.

    decisions = plan(items, Retention(keep_daily=7, keep_weekly=4), tz=ZoneInfo("Europe/Paris"))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

__all__ = ["Retention", "Item", "Decision", "plan", "KEEP_OPTIONS", "RetentionError"]

# The options in the order they are applied (the order is part of the semantics).
KEEP_OPTIONS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                "keep_yearly")
MAX_KEEP = 1_000_000


class RetentionError(ValueError):
    """A retention document that cannot be used (unknown option, bad count)."""


@dataclass(frozen=True)
class Retention:
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None) -> "Retention":
        """Validate a JSON object such as `{"keep_last": 3, "keep_daily": 7}`."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise RetentionError("retention must be an object of keep_* counts")
        unknown = sorted(set(doc) - set(KEEP_OPTIONS))
        if unknown:
            raise RetentionError(f"unknown retention option(s) {', '.join(unknown)}; "
                                 f"allowed: {', '.join(KEEP_OPTIONS)}")
        values: dict[str, int | None] = {}
        for name in KEEP_OPTIONS:
            v = doc.get(name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise RetentionError(f"retention.{name} must be an integer, got {v!r}")
            if v < 0 or v > MAX_KEEP:
                raise RetentionError(f"retention.{name} must be between 0 and {MAX_KEEP}, "
                                     f"got {v}")
            values[name] = v
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def keeps_everything(self) -> bool:
        """True when no option is above 0: like PBS's prune command, keep everything
        rather than prune a VM to nothing."""
        return not any(getattr(self, k) for k in KEEP_OPTIONS)


@dataclass(frozen=True)
class Item:
    """One backup as retention sees it. `time` must be time zone aware."""
    id: Hashable
    time: datetime
    status: str = "succeeded"          # 'succeeded' | 'failed' | 'running'
    protected: bool = False


@dataclass(frozen=True)
class Decision:
    id: Hashable
    time: datetime
    keep: bool
    # keep-last … keep-yearly, protected, keep-partial, running, keep-all; None if pruned
    rule: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": str(self.id), "created_at": self.time.isoformat(),
                "action": "keep" if self.keep else "prune", "rule": self.rule,
                "reason": self.reason}


def _periods(tz: tzinfo) -> dict[str, Callable[[Item], Hashable]]:
    def local(i: Item) -> datetime:
        return i.time.astimezone(tz)

    def week(i: Item) -> Hashable:
        iso = local(i).isocalendar()
        return (iso.year, iso.week)

    return {
        "keep_last": lambda i: ("at", i.time, i.id),
        "keep_hourly": lambda i: local(i).strftime("%Y-%m-%d %H"),
        "keep_daily": lambda i: local(i).date(),
        "keep_weekly": week,
        "keep_monthly": lambda i: (local(i).year, local(i).month),
        "keep_yearly": lambda i: local(i).year,
    }


_KEEP_RULES = frozenset(n.replace("_", "-") for n in KEEP_OPTIONS)
_LABEL = {"keep_last": "one of the last {n}", "keep_hourly": "newest of its hour",
          "keep_daily": "newest of its day", "keep_weekly": "newest of its ISO week",
          "keep_monthly": "newest of its month", "keep_yearly": "newest of its year"}


def plan(items: Iterable[Item], retention: Retention, *, tz: tzinfo) -> list[Decision]:
    """A decision for every item, newest first (ties broken by id, descending)."""
    ordered: Sequence[Item] = sorted(items, key=lambda i: (i.time, str(i.id)), reverse=True)
    for i in ordered:
        if i.time.tzinfo is None:
            raise RetentionError(f"backup {i.id}: time {i.time} has no time zone")
    # id -> (keep, rule, reason); an entry means "decided" for the following options
    mark: dict[Hashable, tuple[bool, str | None, str]] = {}

    # 1. failed and running backups
    keep_partial = True
    for i in ordered:
        if i.status == "running":
            mark[i.id] = (True, "running", "still being written")
        elif i.status == "succeeded":
            keep_partial = False
        else:
            if keep_partial:
                mark[i.id] = (True, "keep-partial",
                              "newest failed backup, newer than every successful one")
            else:
                mark[i.id] = (False, None, "failed, and older than a successful backup")
            keep_partial = False

    if retention.keeps_everything:
        for i in ordered:
            mark.setdefault(i.id, (True, "keep-all", "the policy sets no keep option"))
    else:
        periods = _periods(tz)
        for name in KEEP_OPTIONS:
            n = getattr(retention, name)
            if n is None:
                continue
            _select(ordered, mark, n, name, periods[name])

    out = []
    for i in ordered:
        if i.protected:
            out.append(Decision(i.id, i.time, True, "protected", "marked protected"))
            continue
        keep, rule, reason = mark.get(i.id, (False, None, "no keep option selects it"))
        out.append(Decision(i.id, i.time, keep, rule, reason))
    return out


def _select(ordered: Sequence[Item], mark: dict, n: int, name: str,
            period: Callable[[Item], Hashable]) -> None:
    rule = name.replace("_", "-")
    covered = {period(i) for i in ordered if i.id in mark and mark[i.id][1] in _KEEP_RULES}
    taken: set[Hashable] = set()
    for i in ordered:
        if i.id in mark:
            continue
        if i.protected:
            mark[i.id] = (True, "protected", "marked protected")
            continue
        p = period(i)
        if p in covered:
            continue
        if p not in taken:
            if len(taken) >= n:
                break
            taken.add(p)
            mark[i.id] = (True, rule, _LABEL[name].format(n=n))
        else:
            mark[i.id] = (False, None, f"a newer backup of the same period is kept by {rule}")
