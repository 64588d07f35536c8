"""Retention (PBS prune semantics): documented examples and a simulated year checked
against a second, deliberately naive implementation written from the documented rules."""
import itertools
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestrator.policies.retention import Item, Retention, RetentionError, plan

UTC = timezone.utc


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _run(times, tz=UTC, **opts):
    items = [Item(t, _t(t)) for t in times]
    return {d.id: d for d in plan(items, Retention(**opts), tz=tz)}


def kept(times, **opts):
    return sorted(i for i, d in _run(times, **opts).items() if d.keep)


def pruned(times, **opts):
    return sorted(i for i, d in _run(times, **opts).items() if not d.keep)


# --- examples from Proxmox Backup Server's prune tests (UTC) -------------------------

HOURLY = ["2019-11-15T09:39:15Z", "2019-11-15T10:49:15Z", "2019-11-15T10:59:15Z",
          "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z", "2019-11-15T11:59:15Z"]
SIMPLE = ["2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z",
          "2019-12-04T12:59:15Z"]
SPREAD = ["2018-11-15T11:59:15Z", "2019-11-15T11:59:15Z", "2019-11-21T11:59:15Z",
          "2019-11-22T11:59:15Z", "2019-11-29T11:59:15Z", "2019-12-01T11:59:15Z",
          "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"]


def test_pbs_hourly_examples():
    assert pruned(HOURLY, keep_hourly=3) == [
        "2019-11-15T10:49:15Z", "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z"]
    assert kept(HOURLY, keep_hourly=2) == ["2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z"]


def test_pbs_simple_examples():
    assert pruned(SIMPLE, keep_last=4) == []
    assert pruned(SIMPLE, keep_last=3) == SIMPLE[:1]
    assert pruned(SIMPLE, keep_last=2) == SIMPLE[:2]
    assert pruned(SIMPLE, keep_last=1) == SIMPLE[:3]
    assert pruned(SIMPLE, keep_last=2, keep_daily=2) == []
    assert pruned(SIMPLE, keep_daily=3) == ["2019-12-04T11:59:15Z"]
    assert pruned(SIMPLE, keep_daily=2) == ["2019-12-02T11:59:15Z", "2019-12-04T11:59:15Z"]
    # all within one ISO week / month / year: one backup survives
    for opts in ({"keep_weekly": 5}, {"keep_daily": 1, "keep_weekly": 5},
                 {"keep_monthly": 6}, {"keep_yearly": 7},
                 {"keep_weekly": 5, "keep_monthly": 6, "keep_yearly": 7}):
        assert pruned(SIMPLE, **opts) == SIMPLE[:3], opts


def test_pbs_spread_examples():
    assert kept(SPREAD, keep_daily=1) == ["2019-12-04T11:59:15Z"]
    assert kept(SPREAD, keep_last=1, keep_daily=1) == [
        "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"]
    # 2019-12-01 is a Sunday: the newest backup of the ISO week before the daily one's
    assert kept(SPREAD, keep_daily=1, keep_weekly=1) == [
        "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"]
    assert kept(SPREAD, keep_daily=1, keep_weekly=1, keep_monthly=1) == [
        "2019-11-22T11:59:15Z", "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"]
    assert kept(SPREAD, keep_monthly=1, keep_yearly=1) == [
        "2018-11-15T11:59:15Z", "2019-12-04T11:59:15Z"]


def test_keep_zero_everywhere_keeps_all_like_the_prune_command():
    ds = _run(SIMPLE, keep_last=0)
    assert all(d.keep and d.rule == "keep-all" for d in ds.values())
    assert all(d.rule == "keep-all" for d in _run(SIMPLE).values())


def test_rules_and_reasons_are_reported():
    ds = _run(SPREAD, keep_last=1, keep_daily=1, keep_weekly=1)
    assert ds["2019-12-04T11:59:15Z"].rule == "keep-last"
    assert ds["2019-12-03T11:59:15Z"].rule == "keep-daily"
    assert ds["2019-12-01T11:59:15Z"].rule == "keep-weekly"      # Sunday of the week before
    assert ds["2019-12-02T11:59:15Z"].rule is None and not ds["2019-12-02T11:59:15Z"].keep
    assert ds["2019-12-02T11:59:15Z"].to_dict()["action"] == "prune"


def test_failed_backups():
    t = SIMPLE
    items = [Item("ok1", _t(t[0])), Item("bad1", _t(t[1]), "failed"),
             Item("ok2", _t(t[2])), Item("bad2", _t(t[3]), "failed"),
             Item("bad3", _t(t[3]) + timedelta(minutes=5), "failed"),
             Item("run", _t(t[3]) + timedelta(minutes=9), "running")]
    ds = {d.id: d for d in plan(items, Retention(keep_last=1), tz=UTC)}
    # only the newest failure newer than the last success survives; failures never
    # take a keep slot (ok2 is "the last" even though failures are newer)
    assert ds["bad3"].keep and ds["bad3"].rule == "keep-partial"
    assert not ds["bad2"].keep and not ds["bad1"].keep
    assert ds["ok2"].rule == "keep-last" and not ds["ok1"].keep
    assert ds["run"].keep and ds["run"].rule == "running"


def test_protected_never_pruned_and_takes_no_slot():
    items = [Item(t, _t(t), protected=(t == SIMPLE[3])) for t in SIMPLE]
    ds = {d.id: d for d in plan(items, Retention(keep_last=1), tz=UTC)}
    assert ds[SIMPLE[3]].rule == "protected"
    assert ds[SIMPLE[2]].rule == "keep-last"        # the slot went to the next one
    assert not ds[SIMPLE[1]].keep and not ds[SIMPLE[0]].keep
    # a protected backup does not cover its day either
    ds = {d.id: d for d in plan(items, Retention(keep_daily=1), tz=UTC)}
    assert ds[SIMPLE[2]].rule == "keep-daily"       # same day as the protected one
    # protected and failed: still kept
    ds = {d.id: d for d in plan([Item("a", _t(SIMPLE[0])),
                                 Item("b", _t(SIMPLE[1]), "failed", protected=True),
                                 Item("c", _t(SIMPLE[2]))], Retention(keep_last=1), tz=UTC)}
    assert ds["b"].keep and ds["b"].rule == "protected" and not ds["a"].keep


def test_periods_follow_the_policy_time_zone():
    # 23:30 UTC on 1 Dec and 00:30 UTC on 2 Dec: two UTC days, one Los Angeles day,
    # and in Tokyo (UTC+9) one day (2 Dec)
    times = ["2019-12-01T23:30:00Z", "2019-12-02T00:30:00Z"]
    assert len(kept(times, keep_daily=5)) == 2
    la = {d.id for d in plan([Item(t, _t(t)) for t in times], Retention(keep_daily=5),
                             tz=ZoneInfo("America/Los_Angeles")) if d.keep}
    assert la == {"2019-12-02T00:30:00Z"}
    # ISO weeks: 2019-12-30 (Monday) is week 1 of ISO year 2020, with 2020-01-01
    times = ["2019-12-29T12:00:00Z", "2019-12-30T12:00:00Z", "2020-01-01T12:00:00Z"]
    assert kept(times, keep_weekly=2) == ["2019-12-29T12:00:00Z", "2020-01-01T12:00:00Z"]
    # but in calendar years, 2019-12-30 is 2019
    assert kept(times, keep_yearly=2) == ["2019-12-30T12:00:00Z", "2020-01-01T12:00:00Z"]


def test_validation():
    assert Retention.from_mapping({"keep_last": 2}).to_dict() == {"keep_last": 2}
    for bad, words in (({"keep_lats": 1}, "unknown retention option"),
                       ({"keep_daily": -1}, "between 0"),
                       ({"keep_daily": "7"}, "integer"), ({"keep_daily": True}, "integer"),
                       ([1], "object")):
        with pytest.raises(RetentionError, match=words):
            Retention.from_mapping(bad)
    with pytest.raises(RetentionError, match="time zone"):
        plan([Item("x", datetime(2020, 1, 1))], Retention(keep_last=1), tz=UTC)


# --- a simulated year against a naive implementation ---------------------------------

def naive(items, opts, tz):
    """Written from the documented rules, not from plan(): group by period, sort the
    fresh periods by their newest candidate, take N, keep each one's newest."""
    keys = {
        "keep_last": lambda i: i.id,
        "keep_hourly": lambda i: (i.time.astimezone(tz).date(), i.time.astimezone(tz).hour),
        "keep_daily": lambda i: i.time.astimezone(tz).date(),
        "keep_weekly": lambda i: i.time.astimezone(tz).isocalendar()[:2],
        "keep_monthly": lambda i: (i.time.astimezone(tz).year, i.time.astimezone(tz).month),
        "keep_yearly": lambda i: i.time.astimezone(tz).year,
    }
    good = [i for i in items if i.status == "succeeded"]
    newest_ok = max((i.time for i in good), default=None)
    failed = [i for i in items if i.status == "failed"]
    newest_failed = max(failed, key=lambda i: i.time, default=None)
    if not any(opts.values()):
        return {i.id for i in items}
    keep = {}          # id -> option name
    decided = set()
    for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                 "keep_yearly"):
        n = opts.get(name)
        if n is None:
            continue
        key = keys[name]
        covered = {key(i) for i in good if i.id in keep}
        groups = {}
        for i in good:
            if i.id not in decided and not i.protected:
                groups.setdefault(key(i), []).append(i)
        fresh = [k for k in groups if k not in covered]
        fresh.sort(key=lambda k: max(i.time for i in groups[k]), reverse=True)
        for k in fresh[:n]:
            members = sorted(groups[k], key=lambda i: i.time, reverse=True)
            keep[members[0].id] = name
            decided.update(i.id for i in members)
    result = set(keep) | {i.id for i in items if i.protected}
    if newest_failed is not None and (newest_ok is None or newest_failed.time > newest_ok):
        result.add(newest_failed.id)
    return result


def _year(step: timedelta, jitter: bool, rng: random.Random, start="2023-01-01T00:17:00Z"):
    t = _t(start)
    end = t + timedelta(days=365)
    out = []
    n = 0
    while t < end:
        at = t + (timedelta(minutes=rng.randrange(0, 40)) if jitter else timedelta(0))
        status = "failed" if rng.random() < 0.03 else "succeeded"
        out.append(Item(f"b{n:05d}", at, status, protected=rng.random() < 0.01))
        n += 1
        t += step
    return out


OPTION_SETS = [
    {"keep_last": 3},
    {"keep_hourly": 24},
    {"keep_daily": 7},
    {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6},
    {"keep_last": 5, "keep_hourly": 12, "keep_daily": 14, "keep_weekly": 8,
     "keep_monthly": 12, "keep_yearly": 3},
    {"keep_weekly": 52},
    {"keep_monthly": 13, "keep_yearly": 2},
    {"keep_hourly": 48, "keep_weekly": 2, "keep_yearly": 1},
    {"keep_last": 0, "keep_daily": 3},
]


@pytest.mark.parametrize("step", [timedelta(hours=1), timedelta(days=1)], ids=["hourly", "daily"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
def test_simulated_year_matches_naive(step, tz):
    rng = random.Random(f"{step}{tz}")
    zone = ZoneInfo(tz)
    items = _year(step, jitter=step > timedelta(hours=1), rng=rng)
    for opts in OPTION_SETS:
        got = {d.id for d in plan(items, Retention(**opts), tz=zone) if d.keep}
        assert got == naive(items, opts, zone), opts
    # every combination of three options with small counts
    names = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
             "keep_yearly"]
    for combo in itertools.combinations(names, 3):
        opts = {n: rng.randrange(1, 6) for n in combo}
        got = {d.id for d in plan(items, Retention(**opts), tz=zone) if d.keep}
        assert got == naive(items, opts, zone), opts


def test_simulated_year_expected_counts():
    """A clean daily year (no failures): the kept set is what a person would count."""
    items = [Item(i, _t("2023-01-01T02:00:00Z") + timedelta(days=i)) for i in range(365)]
    ds = plan(items, Retention(keep_daily=7, keep_weekly=4, keep_monthly=6), tz=UTC)
    keep = sorted(d.time.date().isoformat() for d in ds if d.keep)
    # 7 last days (Dec 25..31, 2023; Dec 31 is a Sunday), then the Sundays of the
    # 4 previous ISO weeks, then the newest undecided day of each of the 6 months
    # before December (December is covered by the daily ones). November's is the
    # 26th, not the 30th: Nov 27-30 lie in the ISO week of Sunday Dec 3, which the
    # weekly option took, so they were passed over before the monthly option ran.
    assert keep == ["2023-06-30", "2023-07-31", "2023-08-31", "2023-09-30", "2023-10-31",
                    "2023-11-26", "2023-12-03", "2023-12-10", "2023-12-17", "2023-12-24",
                    "2023-12-25", "2023-12-26", "2023-12-27", "2023-12-28", "2023-12-29",
                    "2023-12-30", "2023-12-31"]
