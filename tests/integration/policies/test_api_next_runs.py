"""GET /api/v1/policies/next-runs: a schedule's next fire times before it is saved
(the portal's schedule field), validated like a policy's schedule."""
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


async def test_next_runs_of_an_unsaved_schedule(papi):
    viewer = await papi.token("viewer")
    st, r = await papi.call("GET", "/api/v1/policies/next-runs?schedule=30+2+*+*+1-5"
                                   "&timezone=Europe/Paris&count=3", viewer)
    assert st == 200, r
    assert (r["schedule"], r["timezone"]) == ("30 2 * * 1-5", "Europe/Paris")
    runs = [datetime.fromisoformat(x) for x in r["next_runs"]]
    assert len(runs) == 3 and runs == sorted(runs) and runs[0] > datetime.now(ZoneInfo("UTC"))
    for t in runs:   # 02:30 Paris time on weekdays, whatever the UTC offset that day
        local = t.astimezone(ZoneInfo("Europe/Paris"))
        assert (local.hour, local.minute) == (2, 30) and local.weekday() < 5
        assert t.utcoffset() == timedelta(0)
    # the default count is 5 and the default zone the service's
    st, r = await papi.call("GET", "/api/v1/policies/next-runs?schedule=0+*+*+*+*", viewer)
    assert st == 200 and r["timezone"] == "UTC" and len(r["next_runs"]) == 5


async def test_next_runs_refuses_what_a_policy_would_refuse(papi):
    for qs, words in [("schedule=0+2+*+*", "needs 5"), ("schedule=61+*+*+*+*", "not a valid cron"),
                      ("schedule=0+0+31+2+*", "never fires"), ("", "5-field cron"),
                      ("schedule=0+2+*+*+*&timezone=Mars/Base", "unknown time zone"),
                      ("schedule=0+2+*+*+*&count=99", "count must be between 1 and 20")]:
        st, e = await papi.call("GET", f"/api/v1/policies/next-runs?{qs}")
        assert st == 422 and words in e["detail"], (qs, e)
    # the path does not shadow a policy's own routes
    st, e = await papi.call("GET", "/api/v1/policies/3b1f6a52-7c55-4a0e-9a53-6b0d1c2e4f00")
    assert st == 404
