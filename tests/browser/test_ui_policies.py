"""The plugin's automatic-protection parts in real Chromium against a real
orchestrator on the sandbox: the Policies page (create through the form with the
next runs shown in the user's time zone, 422s next to their fields, edit,
delete), the retention preview on real backups, the VM tab's policy and
protection status, the protected flag of a backup, and the dashboard's counts by
protection status.

The browser runs in America/New_York while the policy is read in Europe/Paris,
so "your time" is not the policy's time zone nor the machine's.
"""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.browser.test_ui_plugin import detail_frame, harness, open_portal, place_frame, select, shot

pytestmark = pytest.mark.browser

USER_TZ = "America/New_York"


@pytest.fixture
def context_options():
    return {"timezone_id": USER_TZ, "locale": "en-US"}


def status_of(orchestrator, method: str, path: str, body=None) -> tuple[int, dict | None]:
    """The HTTP status and body of one call (errors included)."""
    req = urllib.request.Request(f"{orchestrator.url}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {orchestrator.admin_token}",
                                          "Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=orchestrator.ca_file)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def local_hm(iso: str) -> str:
    """How en-US Chromium in USER_TZ writes the hour and minute of `iso` ('08:30 PM')."""
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(USER_TZ)).strftime("%I:%M %p")


@pytest.fixture(scope="module")
def with_backups(orchestrator, sandbox):
    """db-primary with three real backups (one full, two incremental) and a policy
    that keeps the last two: the preview keeps two and would prune one."""
    vm = sandbox.vm("db-primary")
    for mode in ("full", "auto", "auto"):
        job = orchestrator.api("POST", "/api/v1/backups", {"vm_ids": [vm["id"]], "mode": mode})["job"]
        assert orchestrator.wait_job(job["id"])["state"] == "succeeded"
    # yearly: it never fires during the tests (a run would add and prune backups)
    pol = orchestrator.api("POST", "/api/v1/policies", {
        "name": "db-keep-2", "schedule": "0 3 1 1 *", "timezone": "UTC",
        "retention": {"keep_last": 2}, "vm_ids": [vm["id"]]})
    return vm, pol


def test_policies_page_create_edit_delete(page, portal, orchestrator, sandbox):
    vm = sandbox.vm("web-frontend")
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    open_portal(page, portal, orchestrator.admin_token)
    assert "Policies" in page.locator("[data-container='ovault'] a").all_inner_texts()
    f = place_frame(page, "ovault-policies")
    f.locator("[data-action='new-policy']").click()
    form = f.locator(".ov-modal [data-form='policy']")
    form.wait_for()
    form.locator("#ov-p-name").fill(name)
    form.locator("#ov-p-timezone").fill("Europe/Paris")
    # a schedule with four fields: the server's message, next to the schedule field, as typed…
    form.locator("#ov-p-schedule").fill("30 2 * *")
    err = form.locator("[data-error-for='schedule']")
    err.filter(has_text="needs 5").wait_for()
    assert form.locator("#ov-p-schedule").get_attribute("aria-invalid") == "true"
    # …and the 422 of the create itself, in the same place; nothing is created
    err.evaluate("el => { el.textContent = ''; }")
    f.locator(".ov-modal [data-action='save']").click()
    err.filter(has_text="has 4 fields").wait_for()
    assert name not in [p["name"] for p in orchestrator.api("GET", "/api/v1/policies")["items"]]
    # a good schedule: the next runs, computed by the server, shown in the user's time
    form.locator("#ov-p-schedule").fill("30 2 * * *")
    runs = form.locator("[data-region='next-runs'] li")
    runs.first.wait_for()
    assert err.inner_text() == "" and form.locator("#ov-p-schedule").get_attribute("aria-invalid") is None
    expected = orchestrator.api("GET", "/api/v1/policies/next-runs?schedule=30+2+*+*+*&timezone=Europe/Paris")
    shown = [runs.nth(i).get_attribute("data-time") for i in range(runs.count())]
    assert shown == expected["next_runs"]
    assert USER_TZ in form.locator("[data-region='next-runs']").inner_text()
    assert local_hm(shown[0]) in runs.first.inner_text()        # 02:30 in Paris is 20:30 in New York
    form.locator("#ov-p-keep_last").fill("3")
    form.locator("#ov-p-keep_daily").fill("7")
    form.locator(f"[data-vm='{vm['id']}'] input").check()
    form.locator("#ov-p-name").focus()
    shot(page, "policy-form")
    f.locator(".ov-modal [data-action='save']").click()
    f.locator(".ov-modal").wait_for(state="detached")
    page.wait_for_function("window.__harness.toasts.some(t => t.type === 'success' && t.msg.includes('created'))")
    # listed, with the API's next runs and its one member
    [pol] = [p for p in orchestrator.api("GET", "/api/v1/policies")["items"] if p["name"] == name]
    assert (pol["schedule"], pol["timezone"], pol["retention"]["keep_last"], pol["retention"]["keep_daily"]) == \
        ("30 2 * * *", "Europe/Paris", 3, 7)
    assert [m["vm_id"] for m in pol["members"]] == [vm["id"]]
    row = f.locator(f"[data-policy='{pol['id']}']")
    row.wait_for()
    times = row.locator("[data-next-runs] li")
    assert [times.nth(i).get_attribute("data-time") for i in range(times.count())] == pol["next_runs"][:3]
    assert local_hm(pol["next_runs"][0]) in times.first.inner_text()
    assert row.locator("[data-members]").get_attribute("data-members") == "1"
    assert row.locator("[data-enabled]").get_attribute("data-enabled") == "true"
    # edit: a bad name pattern is a 422 next to that field; then a new schedule
    row.locator("[data-action='edit']").click()
    form.wait_for()
    assert form.locator("#ov-p-schedule").input_value() == "30 2 * * *"
    assert form.locator("#ov-p-keep_last").input_value() == "3"
    assert form.locator(f"[data-vm='{vm['id']}'] input").is_checked()
    form.locator("#ov-p-name_regex").fill("(")
    f.locator(".ov-modal [data-action='save']").click()
    form.locator("[data-error-for='name_regex']").filter(has_text="not a valid regular expression").wait_for()
    assert orchestrator.api("GET", f"/api/v1/policies/{pol['id']}")["rules"]["name_regex"] is None
    form.locator("#ov-p-name_regex").fill("")
    form.locator("#ov-p-schedule").fill("0 */6 * * *")
    form.locator("#ov-p-enabled").uncheck()
    [cluster] = orchestrator.api("GET", "/api/v1/clusters")["items"][:1]
    form.locator(f"[data-cluster='{cluster['id']}'] input").check()
    f.locator(".ov-modal [data-action='save']").click()
    f.locator(".ov-modal").wait_for(state="detached")
    after = orchestrator.api("GET", f"/api/v1/policies/{pol['id']}")
    assert (after["schedule"], after["enabled"], after["next_runs"]) == ("0 */6 * * *", False, [])
    assert after["rules"]["cluster_ids"] == [cluster["id"]] and after["vm_ids"] == [vm["id"]]
    row.locator("[data-enabled='false']").wait_for()
    assert "0 */6 * * *" in row.inner_text()
    # delete, after a confirmation
    row.locator("[data-action='delete']").click()
    f.locator(".ov-modal [data-action='confirm']").click()
    row.wait_for(state="detached")
    assert status_of(orchestrator, "GET", f"/api/v1/policies/{pol['id']}")[0] == 404


def test_retention_preview_matches_the_api(page, portal, orchestrator, with_backups):
    vm, pol = with_backups
    open_portal(page, portal, orchestrator.admin_token)
    f = place_frame(page, "ovault-policies")
    f.locator(f"[data-policy='{pol['id']}'] [data-action='show-preview']").click()
    f.locator("#ov-pv-vm").select_option(vm["id"])
    f.locator("[data-list='keep'] [data-backup]").first.wait_for()
    api = orchestrator.api("GET", f"/api/v1/policies/{pol['id']}/preview?vm_id={vm['id']}")
    [v] = api["vms"]
    want = {b["backup_id"]: (b["action"], b["rule"] or "") for b in v["backups"]}
    assert Counter(a for a, _ in want.values()) == {"keep": 2, "prune": 1}
    rows = f.locator("[data-region='preview-result'] tr[data-backup]")
    seen = {rows.nth(i).get_attribute("data-backup"): (rows.nth(i).get_attribute("data-decision"),
                                                        rows.nth(i).get_attribute("data-rule"))
            for i in range(rows.count())}
    assert seen == want
    kept = f.locator("[data-list='keep'] tr[data-backup]")
    assert {kept.nth(i).get_attribute("data-backup") for i in range(kept.count())} == \
        {k for k, (a, _) in want.items() if a == "keep"}
    # the newest two are kept by keep-last, with the server's reason shown
    newest = sorted(v["backups"], key=lambda b: b["created_at"])[-2:]
    assert {b["action"] for b in newest} == {"keep"}
    assert newest[0]["reason"] in f.locator(f"tr[data-backup='{newest[0]['backup_id']}']").inner_text()
    pruned = f.locator("[data-list='prune'] tr[data-backup]")
    assert pruned.count() == 1 and "prune" in pruned.inner_text()
    f.locator("h1").scroll_into_view_if_needed()
    shot(page, "policies")
    # a preview deletes nothing
    assert len([b for b in orchestrator.api("GET", f"/api/v1/backups?vm_id={vm['id']}")["items"]
                if b["status"] == "succeeded"]) == 3


def test_vm_tab_shows_policy_next_run_and_status(page, portal, orchestrator, sandbox, with_backups):
    vm, pol = with_backups
    open_portal(page, portal, orchestrator.admin_token)
    select(page, vm["name"])
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role !== null")
    tab = detail_frame(page)
    region = tab.locator("[data-region='protection']")
    region.locator("[data-protection]").wait_for()
    api = orchestrator.api("GET", f"/api/v1/vms/{vm['id']}")
    assert (api["policy_id"], api["protection"]) == (pol["id"], "protected")
    assert region.locator("[data-protection]").get_attribute("data-protection") == "protected"
    assert region.locator(f"[data-policy='{pol['id']}']").inner_text() == "db-keep-2"
    assert region.locator("[data-field='next-run'] [data-time]").get_attribute("data-time") == api["next_run"]
    # a VM no policy covers
    other = sandbox.vm("legacy-erp")
    select(page, other["name"])
    tab = detail_frame(page)
    label = tab.locator("[data-region='protection'] [data-protection]")
    label.wait_for()
    assert label.get_attribute("data-protection") == \
        orchestrator.api("GET", f"/api/v1/vms/{other['id']}")["protection"] == "unprotected"
    assert "none" in tab.locator("[data-field='policy']").inner_text()


def test_protected_toggle(page, portal, orchestrator, with_backups):
    vm, _ = with_backups
    backups = [b for b in orchestrator.api("GET", f"/api/v1/backups?vm_id={vm['id']}")["items"]
               if b["status"] == "succeeded"]
    b = backups[-1]
    assert b["protected"] is False
    open_portal(page, portal, orchestrator.admin_token)
    f = place_frame(page, "ovault-backups")
    row = f.locator(f"[data-backup='{b['id']}']")
    row.locator("[data-action='protect']").check()
    row.locator("[data-protected='true'] [data-action='protect']").wait_for()  # redrawn from the server's answer
    assert orchestrator.api("GET", f"/api/v1/backups/{b['id']}")["protected"] is True
    st, problem = status_of(orchestrator, "DELETE", f"/api/v1/backups/{b['id']}")
    assert st == 409 and "protected" in problem["detail"], problem
    assert row.locator("[data-action='delete']").is_disabled()
    # the retention never prunes it: the preview says why it stays
    pv = orchestrator.api("GET", f"/api/v1/policies/{with_backups[1]['id']}/preview?vm_id={vm['id']}")
    [d] = [x for x in pv["vms"][0]["backups"] if x["backup_id"] == b["id"]]
    assert (d["action"], d["protected"]) == ("keep", True)
    # a viewer sees the flag, read-only
    viewer = orchestrator.token("viewer")
    vpage = page.context.new_page()
    open_portal(vpage, portal, viewer)
    vf = place_frame(vpage, "ovault-backups")
    vrow = vf.locator(f"[data-backup='{b['id']}']")
    vrow.wait_for()
    assert vrow.locator("[data-protected='true']").inner_text() == "protected"
    assert vf.locator("[data-action='protect']").count() == 0
    vp = place_frame(vpage, "ovault-policies")
    vp.locator("[data-table='policies']").wait_for()
    assert vp.locator("[data-action='new-policy'], [data-action='edit'], [data-action='delete'], "
                      "[data-action='run']").count() == 0
    vpage.close()
    # unmark: deletable again (not deleted here)
    row.locator("[data-action='protect']").uncheck()
    row.locator("[data-protected='false'] [data-action='protect']").wait_for()
    assert orchestrator.api("GET", f"/api/v1/backups/{b['id']}")["protected"] is False
    assert row.locator("[data-action='delete']").is_enabled()


def test_dashboard_counts_vms_by_protection_status(page, portal, orchestrator, sandbox, with_backups):
    open_portal(page, portal, orchestrator.admin_token)
    f = place_frame(page, "ovault-dashboard")
    kpi = f.locator("[data-kpi='protected']")
    kpi.wait_for()
    vms = orchestrator.api("GET", "/api/v1/vms")["items"]
    count = Counter(v["protection"] for v in vms)
    assert count["protected"] >= 1 and count["unprotected"] >= 1
    for st in ("protected", "at_risk", "unprotected", "excluded"):
        assert kpi.locator(f"[data-status='{st}']").get_attribute("data-count") == str(count[st]), st
    assert kpi.locator(".ov-kpi-value").inner_text() == f"{count['protected']} / {len(vms)}"
    assert f.locator("[data-kpi='unprotected'] .ov-kpi-value").inner_text() == \
        str(count["at_risk"] + count["unprotected"])
    for v in vms:
        assert f.locator(f"[data-table='vms'] tr[data-vm='{v['id']}'] [data-protection]") \
            .get_attribute("data-protection") == v["protection"]
    assert harness(page, "H.failures") == []


def test_conflicts_on_both_policies_and_run_now(page, portal, orchestrator, sandbox, with_backups):
    """Two policies claiming one VM: each row names the other; run now starts the
    members that are not in conflict and says why it cannot start the others."""
    vm, keep2 = with_backups
    web = sandbox.vm("web-frontend")
    a = orchestrator.api("POST", "/api/v1/policies", {"name": "web-a", "schedule": "0 3 1 1 *", "vm_ids": [web["id"]]})
    b = orchestrator.api("POST", "/api/v1/policies", {"name": "web-b", "schedule": "0 4 1 1 *",
                                                      "rules": {"name_regex": "^web-"}})
    try:
        open_portal(page, portal, orchestrator.admin_token)
        f = place_frame(page, "ovault-policies")
        for mine, other in ((a, "web-b"), (b, "web-a")):
            cell = f.locator(f"[data-policy='{mine['id']}'] [data-conflicts]")
            assert cell.get_attribute("data-conflicts") == "1"
            assert f"{web['name']}: also claimed by {other}" in cell.inner_text()
        assert f.locator(f"[data-policy='{keep2['id']}'] [data-conflicts]").get_attribute("data-conflicts") == "0"
        # run now on a policy whose only member is in conflict: nothing starts, and the toast says why
        f.locator(f"[data-policy='{a['id']}'] [data-action='run']").click()
        page.wait_for_function("window.__harness.toasts.some(t => t.type === 'danger' && t.msg.includes('web-a did not start'))")
        assert "conflict" in harness(page, "H.toasts.filter(t => t.type === 'danger').pop().msg")
        # run now on db-keep-2: a backup job of its member, tagged with the policy
        before = {j["id"] for j in orchestrator.api("GET", "/api/v1/jobs?limit=50")["items"]}
        f.locator(f"[data-policy='{keep2['id']}'] [data-action='run']").click()
        page.wait_for_function("window.__harness.toasts.some(t => t.type === 'info' && t.msg.includes('db-keep-2 started'))")
        [job] = [j for j in orchestrator.api("GET", "/api/v1/jobs?limit=50")["items"]
                 if j["id"] not in before and j["kind"] == "backup"]
        assert [m["vm_id"] for m in job["machines"]] == [vm["id"]]
        assert job["request"]["policy_id"] == keep2["id"]
        assert orchestrator.wait_job(job["id"])["state"] == "succeeded"
    finally:
        for p in (a, b):
            status_of(orchestrator, "DELETE", f"/api/v1/policies/{p['id']}")
