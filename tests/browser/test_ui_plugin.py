"""The Administration Portal UI plugin (ui-plugin/) in real Chromium, against a
running orchestrator on the sandbox, hosted by the portal stand-in
(tests/browser/harness + portal.py) exactly where the engine serves plugins.

Screenshots of every place at 1280×800 go to docs/images/ui-*.png.
"""
from __future__ import annotations

import re
import os
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# Screenshots go to build/screenshots on every run; OVAULT_UPDATE_DOC_IMAGES=1 writes
# them over docs/images instead (a test run never dirties the checkout by itself).
IMAGES = (Path(__file__).resolve().parents[2] / "docs" / "images"
          if os.environ.get("OVAULT_UPDATE_DOC_IMAGES") == "1"
          else Path(__file__).resolve().parents[2] / "build" / "screenshots")
PLACES = ["ovault-dashboard", "ovault-backups", "ovault-jobs", "ovault-restores", "ovault-policies", "ovault-targets",
          "ovault-settings"]


def open_portal(page, portal, token: str, *, selection: str = "array", place: str = "vms"):
    page.goto(f"{portal.url}/ovirt-engine/webadmin/?token={token}&selection={selection}#{place}")
    page.wait_for_function("window.__harness && __harness.plugins.ovault && __harness.plugins.ovault.state === 'IN_USE'"
                           " && __harness.log.includes('invoke UserLogin on ovault')")
    return page


def harness(page, expr: str):
    return page.evaluate(f"(() => {{ const H = window.__harness; return {expr}; }})()")


def place_frame(page, token: str):
    page.evaluate(f"location.hash = {token!r}")
    page.wait_for_selector(f"iframe[data-place='{token}']")
    frame = page.frame_locator(f"iframe[data-place='{token}']")
    frame.locator("body[data-ready='true']").wait_for()
    return frame


def detail_frame(page):
    page.click("[data-tab='ovault-vm-backups']")
    frame = page.frame_locator("iframe.detail-frame")
    frame.locator("body[data-ready='true']").wait_for()
    return frame


def select(page, *names):
    page.evaluate("location.hash = 'vms'")
    page.wait_for_selector("[data-grid='vms']")
    harness(page, f"H.select({list(names)!r})")


def shot(page, name: str):
    IMAGES.mkdir(parents=True, exist_ok=True)
    time.sleep(0.4)  # let bars finish their CSS transition
    page.screenshot(path=str(IMAGES / f"ui-{name}.png"))


def plugin_calls(page) -> list[str]:
    return harness(page, "H.calls.filter(c => c.plugin === 'ovault').map(c => c.fn + (c.rejected ? ' (rejected)' : ''))")


@pytest.fixture(scope="module")
def backed_up(orchestrator, sandbox):
    """A VM with a succeeded backup (made through the API), for the restore tests."""
    vm = sandbox.vm("legacy-erp")
    job = orchestrator.api("POST", "/api/v1/backups", {"vm_ids": [vm["id"]], "mode": "full"})["job"]
    assert orchestrator.wait_job(job["id"])["state"] == "succeeded"
    return vm


def test_registers_places_buttons_and_handlers(page, portal, orchestrator):
    open_portal(page, portal, orchestrator.admin_token)
    calls = plugin_calls(page)
    assert calls[:2] == ["register", "ready"], calls
    assert not [c for c in calls if "rejected" in c], calls
    ui = [c for c in calls if c.startswith(("add", "options"))]
    assert ui == ["options", "addPrimaryMenuContainer"] + ["addSecondaryMenuPlace"] * 7 + \
        ["addDetailPlace", "addMenuPlaceActionButton", "addMenuPlaceActionButton"]
    assert harness(page, "H.log") == ["invoke UiInit on ovault", "invoke UserLogin on ovault"]
    assert harness(page, "H.failures") == []
    # Places: the container, the secondary places in order, content served under the engine's plugin path.
    places = harness(page, "Object.values(H.places).map(p => [p.container, p.label, p.token, p.url])")
    assert [p[2] for p in places] == PLACES
    assert {p[0] for p in places} == {"ovault"}
    base = f"{portal.url}/ovirt-engine/webadmin/plugin/ovault/place.html?view="
    assert all(p[3].startswith(base) for p in places), places
    assert harness(page, "H.containers.ovault.label") == "Backup"
    assert harness(page, "Object.keys(H.detailPlaces)") == ["ovault-vm-backups"]
    assert harness(page, "H.plugins.ovault.options.allowedMessageOrigins") == [portal.url]
    nav = page.locator("[data-container='ovault'] a").all_inner_texts()
    assert nav == ["Dashboard", "Backups", "Jobs", "Restores", "Policies", "Targets", "Webhooks & Settings"]
    # The hidden host page came from where the engine serves plugins.
    assert "/ovirt-engine/webadmin/plugin/ovault/plugin.html" in portal.requests


@pytest.mark.parametrize("form", ["array", "spread"])
def test_selection_drives_buttons_and_detail_tab(page, portal, orchestrator, sandbox, form):
    """oVirt 4.4+ passes the selection as one array, 4.3 and older as separate arguments."""
    open_portal(page, portal, orchestrator.admin_token, selection=form)
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role !== null")
    a, b = sandbox.vm("db-primary"), sandbox.vm("web-frontend")
    select(page, a["name"], b["name"])
    harness(page, "H.renderButtons()")
    assert page.locator("[data-button='Backup now']").is_enabled()
    assert page.locator("[data-button='Restore']").is_disabled()  # restore acts on one VM
    select(page, a["name"])
    assert page.locator("[data-button='Restore']").is_enabled()
    urls = harness(page, "H.calls.filter(c => c.fn === 'setPlaceContentUrl').map(c => c.args)")
    assert urls[-1][0] == "ovault-vm-backups" and f"vm={a['id']}" in urls[-1][1]
    frame = detail_frame(page)
    assert frame.locator("h1").inner_text() == f"Backups of {a['name']}"
    assert harness(page, "H.failures") == []


def test_handlers_never_throw(page, portal, orchestrator):
    """Whatever the portal passes, no exception escapes: the portal would unload the plugin."""
    open_portal(page, portal, orchestrator.admin_token)
    harness(page, """(() => {
        const p = H.plugins.ovault, h = p.handlers;
        for (const args of [[], [null], [undefined], [[null, 5, 'x']], [{}], [[{id: 'x'}]], ['a', 'b']]) {
            h.VirtualMachineSelectionChange(...args); h.MessageReceived(...args);
        }
        h.MessageReceived({ovault: 'watch-job', jobId: 42}); h.MessageReceived({ovault: 'reveal', place: 'nope'});
        h.UserLogout(); h.UserLogin('admin', 'id'); h.UserLogin();
        for (const b of H.buttons) for (const f of ['isEnabled', 'isAccessible', 'onClick']) { b.iface[f](); b.iface[f](null); b.iface[f]([null]); }
    })()""")
    assert harness(page, "H.plugins.ovault.state") == "IN_USE"
    assert harness(page, "H.failures") == []
    # Messages from origins the plugin did not allow never reach it.
    page.evaluate("window.postMessage({ovault: 'reveal', place: 'ovault-jobs'}, '*')")
    page.wait_for_function("window.__harness.calls.some(c => c.fn === 'revealPlace')")
    assert harness(page, "H.log.filter(l => l.includes('rejected'))") == []


def test_dashboard_lists_the_sandbox_vms(page, portal, orchestrator, sandbox):
    open_portal(page, portal, orchestrator.admin_token)
    frame = place_frame(page, "ovault-dashboard")
    rows = frame.locator("[data-table='vms'] tbody tr")
    names = sorted(rows.locator("td:first-child").all_inner_texts())
    assert names == sorted(v["name"] for v in sandbox.info["vms"])
    protected = frame.locator("[data-kpi='protected'] .ov-kpi-value").inner_text()
    n = len(sandbox.info["vms"])
    # protected: a policy covers it and its last success is recent enough (docs/policies.md)
    expected = sum(1 for v in orchestrator.api("GET", "/api/v1/vms")["items"] if v["protection"] == "protected")
    assert protected == f"{expected} / {n}"


def test_backup_now_progress_moves_live_to_success(page, portal, orchestrator, sandbox):
    vm = sandbox.vm("web-frontend")
    # Fresh, never-seen guest data (random seed), so the transfer lasts long enough
    # for several progress samples (the runner records one every 0.5 s). The
    # sandbox takes random writes of at most 128 MiB at a time.
    seed = uuid.uuid4().int % 2**30
    for i in range(4):
        sandbox.write(vm["id"], i << 27, 1 << 27, pattern="random", seed=seed + i)
    open_portal(page, portal, orchestrator.admin_token)
    select(page, vm["name"])
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role !== null")
    harness(page, "H.renderButtons()")
    # The VM's Backups tab stays open under the grid and records every value its bars take.
    tab = detail_frame(page)
    frame = next(f for f in page.frames if "view=vm" in f.url)
    frame.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(ms => { for (const m of ms) {
            const t = m.target;
            if (t.getAttribute && t.getAttribute('role') === 'progressbar')
                window.__seen.push([t.closest('[data-key]').dataset.key, +t.getAttribute('aria-valuenow')]);
        }}).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['aria-valuenow']});
    }""")
    page.click("[data-button='Backup now']")
    page.wait_for_function("window.__harness.toasts.some(t => t.type === 'info')")
    job = orchestrator.api("GET", "/api/v1/jobs?limit=5")["items"][0]
    assert job["machines"][0]["vm_id"] == vm["id"]
    card = tab.locator(f"[data-job='{job['id']}']")
    card.wait_for()
    shot_taken, state = False, None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = card.locator(".ov-job-head [data-state]").get_attribute("data-state")
        if not shot_taken and state == "running" and card.locator(".ov-disks .ov-progress").count():
            shot(page, "vm-backup-running")
            shot_taken = True
        if state in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.05)
    assert state == "succeeded", orchestrator.api("GET", f"/api/v1/jobs/{job['id']}")
    machine_key = f"{job['id']}/{job['machines'][0]['id']}"
    values = [v for k, v in frame.evaluate("window.__seen") if k == machine_key]
    assert any(0 < v < 100 for v in values), f"no intermediate progress seen: {values}"
    assert values == sorted(values) and values[-1] == 100, values
    bar = card.locator(f"[data-key='{machine_key}']")
    assert bar.get_attribute("data-state") == "succeeded"
    assert bar.locator("[role=progressbar]").get_attribute("aria-valuenow") == "100"
    final = orchestrator.api("GET", f"/api/v1/jobs/{job['id']}")
    assert card.locator(".ov-disks .ov-progress").count() == len(final["machines"][0]["disks"])
    # The host page followed the job it started and toasted its end.
    page.wait_for_function("window.__harness.toasts.some(t => t.type === 'success')", timeout=15000)
    assert any(vm["name"] in t["msg"] for t in harness(page, "H.toasts.filter(t => t.type === 'success')"))
    # The tab lists the new backup once the job is done.
    tab.locator(f"[data-backup='{final['machines'][0]['backup_id']}']").wait_for()


def test_restore_wizard_creates_a_new_vm(page, portal, orchestrator, sandbox, backed_up, conn):
    name = f"restored-{uuid.uuid4().hex[:6]}"
    open_portal(page, portal, orchestrator.admin_token)
    select(page, backed_up["name"])
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role !== null")
    harness(page, "H.renderButtons()")
    page.click("[data-button='Restore']")
    dialog = page.frame_locator("iframe[data-dialog='ovault-restore']")
    dialog.locator("body[data-ready='true']").wait_for()
    wiz = dialog.locator("[data-wizard='restore']")
    assert wiz.locator("input[name='ov-r-backup']:checked").count() == 1
    dialog.locator("[data-action='next']").click()                         # backup → type
    assert dialog.locator("input[name='ov-r-kind'][value='new']").is_checked()
    dialog.locator("[data-action='next']").click()                         # type → options
    dialog.locator("#ov-r-name").fill("bad name!")
    dialog.locator("[data-action='next']").click()
    assert "needs a name" in dialog.locator(".ov-alert").inner_text()
    dialog.locator("#ov-r-name").fill(name)
    dialog.locator("[data-action='next']").click()                         # options → disks
    disks = dialog.locator("[data-table='restore-disks'] input[type=checkbox]")
    latest = orchestrator.api("GET", f"/api/v1/backups?vm_id={backed_up['id']}&status=succeeded")["items"][0]
    assert disks.count() == len(latest["disks"]) and all(disks.nth(i).is_checked() for i in range(disks.count()))
    dialog.locator("[data-action='next']").click()                         # disks → review
    assert name in dialog.locator(".ov-summary").inner_text()
    shot(page, "restore-wizard")
    dialog.locator("[data-action='submit']").click()
    result = dialog.locator("[data-region='result'] .ov-alert")
    result.wait_for(timeout=120000)
    shot(page, "restore-progress")
    assert "Restore finished" in result.inner_text(), result.inner_text()
    vms = conn.system_service().vms_service().list(search=f"name={name}")
    assert [v.name for v in vms] == [name]
    # other suites share this sandbox: leave its inventory as it was
    conn.system_service().vms_service().vm_service(vms[0].id).remove()
    # The dialog asked the host page (postMessage → MessageReceived) to follow the job and toast its end.
    page.wait_for_function("window.__harness.toasts.some(t => t.type === 'success' && t.msg.startsWith('Restore'))", timeout=15000)
    dialog.locator("[data-action='close']").click()
    assert harness(page, "Object.keys(H.dialogs)") == []


def test_in_place_restore_needs_typed_confirmation(page, portal, orchestrator, backed_up):
    open_portal(page, portal, orchestrator.admin_token)
    frame = place_frame(page, "ovault-backups")
    frame.locator(f"[data-backup] [data-action='restore']").first.click()
    m = frame.locator(".ov-modal")
    m.locator("[data-action='next']").click()
    m.locator("input[name='ov-r-kind'][value='in_place']").check()
    for _ in range(3):
        m.locator("[data-action='next']").click()
    submit = m.locator("[data-action='submit']")
    assert submit.is_disabled() and submit.inner_text().startswith("Overwrite")
    vm_name = frame.locator(f"[data-backup]").first.locator("td").first.inner_text()
    m.locator("#ov-r-confirm").fill(vm_name)
    assert submit.is_enabled()
    m.locator("[data-action='cancel']").click()
    assert frame.locator(".ov-modal").count() == 0


def test_viewer_sees_no_destructive_buttons(page, portal, orchestrator, sandbox, backed_up):
    viewer = orchestrator.token("viewer")
    open_portal(page, portal, viewer)
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role === 'viewer'")
    select(page, backed_up["name"])
    harness(page, "H.renderButtons()")
    assert page.locator("#plugin-buttons button").count() == 0
    frame = detail_frame(page)
    assert frame.locator("[data-backup]").count() >= 1          # sees the backups…
    assert frame.locator("button[data-action]").count() == 0    # …but no backup/restore/delete
    for token in PLACES:
        f = place_frame(page, token)
        assert f.locator("body").get_attribute("data-role") == "viewer"
        destructive = f.locator("[data-action='backup'], [data-action='restore'], [data-action='delete'], "
                                "[data-action='cancel'], [data-action='new-restore'], [data-action='protect'], "
                                "[data-action='run'], [data-action='new-policy'], [data-action='edit']")
        assert destructive.count() == 0, token
    f = place_frame(page, "ovault-backups")
    assert f.locator("[data-backup]").count() >= 1
    # Backups show their consistency (the sandbox's record VMs run no guest: crash).
    assert f.locator("[data-backup] td[data-consistency='crash']").count() >= 1
    assert f.locator("[data-backup] td[data-consistency='filesystem']").count() == 0
    assert f.locator("[data-backup] td[data-consistency='crash'] .ov-label").first.inner_text() == "crash"


def test_screenshots_of_every_place(page, portal, orchestrator, sandbox, backed_up):
    open_portal(page, portal, orchestrator.admin_token)
    for token in PLACES:
        f = place_frame(page, token)
        if token == "ovault-policies":
            continue  # test_ui_policies.py takes it with a policy in the list
        if token in ("ovault-dashboard", "ovault-jobs", "ovault-restores"):
            f.locator(".ov-live[data-mode='polling'], .ov-live[data-mode='websocket']").wait_for()
        shot(page, token.removeprefix("ovault-"))
    select(page, backed_up["name"])
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role !== null")
    harness(page, "H.renderButtons()")
    f = detail_frame(page)
    f.locator("[data-backup]").first.wait_for()
    shot(page, "vm-backups")
    assert re.search(r"\d", f.locator("[data-backup] td").first.inner_text())
