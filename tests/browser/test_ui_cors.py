"""The second deployment of docs/ui-plugin.md: the plugin calls the orchestrator
directly at its own origin (apiBaseUrl absolute), the orchestrator answering
CORS for the portal's origin only. Real Chromium enforces CORS; a portal at an
origin the orchestrator was not configured for gets a clear error, not data."""
from __future__ import annotations

import pytest

from tests.browser.conftest import run_orchestrator
from tests.browser.portal import Portal
from tests.browser.test_ui_plugin import open_portal, place_frame

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def cors(sandbox):
    """(allowed portal, other portal, orchestrator): the orchestrator answers CORS
    for the first portal's origin only; both portals point the plugin at it."""
    ca = sandbox.info["engine"]["ca_file"]
    allowed = Portal("https://unused.invalid", ca, []).start()
    other = Portal("https://unused.invalid", ca, []).start()
    try:
        with run_orchestrator(sandbox, env={"OVAULT_API__CORS_ORIGINS": allowed.url}) as o:
            vms = [{k: v.get(k) for k in ("id", "name", "status", "memory")}
                   for v in o.api("GET", "/api/v1/vms")["items"]]
            for p in (allowed, other):
                p.vms = vms
                p.overrides = {"ovault": {"config": {"apiBaseUrl": o.url + "/", "pollIntervalMs": 250}}}
            yield allowed, other, o
    finally:
        allowed.stop()
        other.stop()


def _page(browser, portal, orchestrator):
    """Only the portal and the orchestrator may be reached; requests to the
    orchestrator are recorded with their Origin header."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800},
                              ignore_https_errors=True)  # the orchestrator's self-signed test CA
    page = ctx.new_page()
    page.external, page.api_calls = [], []

    def gate(route):
        url = route.request.url
        if url.startswith((portal.url + "/", orchestrator.url + "/")):
            route.continue_()
        else:
            page.external.append(url)
            route.abort()
    ctx.route("**/*", gate)
    page.on("request", lambda r: page.api_calls.append((r.method, r.url, r.headers.get("origin")))
            if r.url.startswith(orchestrator.url) else None)
    return ctx, page


def test_plugin_works_cross_origin_with_cors(browser, cors, sandbox):
    portal, _, orch = cors
    ctx, page = _page(browser, portal, orch)
    try:
        open_portal(page, portal, orch.admin_token)
        frame = place_frame(page, "ovault-dashboard")
        rows = frame.locator("[data-table='vms'] tbody tr")
        rows.first.wait_for()
        assert sorted(rows.locator("td:first-child").all_inner_texts()) == \
            sorted(v["name"] for v in sandbox.info["vms"])
        # live progress over the websocket at the orchestrator's origin
        jobs = place_frame(page, "ovault-jobs")
        jobs.locator(".ov-live[data-mode='websocket']").wait_for(timeout=15000)
        # the data came straight from the orchestrator, asked from the portal's origin
        gets = [c for c in page.api_calls if c[0] == "GET" and "/api/v1/vms" in c[1]]
        assert gets and all(origin == portal.url for _, _, origin in gets), page.api_calls
        assert not [u for u in portal.requests if u.startswith("/ovault-api/")]  # nothing proxied
        assert not page.external, page.external
    finally:
        ctx.close()


def test_a_portal_origin_not_configured_gets_an_error_not_data(browser, cors):
    _, other, orch = cors
    ctx, page = _page(browser, other, orch)
    try:
        open_portal(page, other, orch.admin_token)
        page.evaluate("location.hash = 'ovault-dashboard'")
        frame = page.frame_locator("iframe[data-place='ovault-dashboard']")
        alert = frame.locator(".ov-main", has_text="Could not load the dashboard")
        alert.wait_for(timeout=20000)
        assert "Cannot reach the ovault service" in alert.inner_text()  # the browser refused the answer
        assert frame.locator("[data-table='vms'] tbody tr").count() == 0
    finally:
        ctx.close()
