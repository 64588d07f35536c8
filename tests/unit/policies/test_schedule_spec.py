"""Schedules (cron + IANA zone) and policy validation: the messages the API returns."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestrator.errors import Invalid
from orchestrator.policies.schedule import Schedule
from orchestrator.policies.spec import PolicySpec

UTC = timezone.utc


def test_next_times_in_the_policy_zone():
    s = Schedule.parse("0 2 * * *", "Europe/Paris")
    after = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)
    assert s.next_times(after, 2) == [datetime(2024, 1, 11, 1, 0, tzinfo=UTC),
                                      datetime(2024, 1, 12, 1, 0, tzinfo=UTC)]
    # summer time: 02:00 in Paris is 00:00 UTC
    assert s.next_after(datetime(2024, 6, 30, 23, tzinfo=UTC)) == datetime(2024, 7, 1, tzinfo=UTC)
    assert s.next_after(datetime(2024, 7, 1, tzinfo=UTC)) == datetime(2024, 7, 2, tzinfo=UTC)
    assert s.previous(datetime(2024, 7, 1, 0, 0, tzinfo=UTC)) == datetime(2024, 7, 1, tzinfo=UTC)
    assert s.interval(datetime(2024, 1, 10, 12, tzinfo=UTC)) == timedelta(days=1)


def test_between_and_weekday_interval():
    s = Schedule.parse("*/15 * * * *", "UTC")
    a = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert list(s.between(a, a + timedelta(hours=1))) == [
        a + timedelta(minutes=m) for m in (15, 30, 45, 60)]
    w = Schedule.parse("0 3 * * 1-5", "UTC")
    # Sunday: the gap is Friday 03:00 to Monday 03:00
    assert w.interval(datetime(2024, 1, 7, 12, tzinfo=UTC)) == timedelta(days=3)


@pytest.mark.parametrize("body, words", [
    ({"name": "x", "schedule": "0 2 * *"}, "has 4 fields; it needs 5"),
    ({"name": "x", "schedule": "61 2 * * *"}, "not a valid cron expression"),
    ({"name": "x", "schedule": "* * * * * *"}, "has 6 fields"),
    ({"name": "x", "schedule": "0 2 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"name": "x", "schedule": "0 2 * * *", "timezone": "../etc/passwd"}, "IANA"),
    ({"name": "x", "schedule": "0 2 * * *", "timezone": "Europe"}, "unknown time zone"),
    ({"name": "x", "schedule": "0 0 31 2 *"}, "never fires"),
    ({"name": "x", "schedule": "0 2 * * *", "vm_ids": ["web-1"]}, "not a VM id"),
    ({"name": "x", "schedule": "0 2 * * *", "rules": {"name_regex": "db-("}},
     "rules.name_regex 'db-(' is not a valid regular expression"),
    ({"name": "x", "schedule": "0 2 * * *", "rules": {"colour": "red"}}, "unknown rules fields"),
    ({"name": "x", "schedule": "0 2 * * *", "retention": {"keep_forever": 1}},
     "unknown retention option"),
    ({"name": "x", "schedule": "0 2 * * *", "retention": {"keep_daily": -3}}, "between 0"),
    ({"name": "x", "schedule": "0 2 * * *", "window_minutes": 0}, "window_minutes"),
    ({"name": "x", "schedule": "0 2 * * *", "full_every_days": -1}, "full_every_days"),
    ({"name": "x", "schedule": "0 2 * * *", "notify": {"emails": ["nope"]}}, "not an e-mail"),
    ({"name": "x", "schedule": "0 2 * * *", "notify": {"on": ["always"]}}, "notify.on"),
    ({"name": "", "schedule": "0 2 * * *"}, "name must be"),
    ({"name": "x", "schedule": "0 2 * * *", "target_id": "t1"}, "target_id must be a UUID"),
    ({"name": "x", "schedule": "0 2 * * *", "surprise": 1}, "unknown fields: surprise"),
])
def test_invalid_policies_say_why(body, words):
    with pytest.raises(Invalid) as e:
        PolicySpec.from_json(body)
    assert words in str(e.value)
    assert e.value.status == 422


def test_spec_round_trip_and_patch():
    s = PolicySpec.from_json({"name": " nightly ", "schedule": "0  2 * * *",
                              "retention": {"keep_daily": 7}, "vm_ids": ["0f0e0d0c-0b0a-4909-8807-060504030201", "0F0E0D0C-0B0A-4909-8807-060504030201", "1f0e0d0c-0b0a-4909-8807-060504030201"],
                              "rules": {"tags": ["prod"], "exclude_name_regex": "^tmp-"},
                              "notify": {"emails": ["ops@example.com"]}},
                             default_timezone="Europe/Paris")
    assert s.name == "nightly" and s.schedule == "0 2 * * *" and s.timezone == "Europe/Paris"
    assert s.vm_ids == ("0f0e0d0c-0b0a-4909-8807-060504030201", "1f0e0d0c-0b0a-4909-8807-060504030201") and s.notify.on == ("failure",)
    assert PolicySpec.from_json(s.to_json()) == s
    p = s.patched({"retention": {"keep_last": 3}, "timezone": "UTC", "vm_ids": None})
    assert p.retention.to_dict() == {"keep_last": 3} and p.timezone == "UTC" and p.vm_ids == ()
    assert p.rules == s.rules
    with pytest.raises(Invalid, match="schedule cannot be null"):
        s.patched({"schedule": None})
    assert s.schedule_obj.tz == ZoneInfo("Europe/Paris")
