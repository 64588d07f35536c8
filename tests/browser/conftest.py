"""Browser fixtures: an orchestrator on the session sandbox, the portal stand-in
(tests/browser/portal.py) and Debian's Chromium driven by Playwright.

The orchestrator gets its own state directory, so other suites may run their
own `ovault serve` on the same sandbox.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser.portal import Portal

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@dataclass
class Orchestrator:
    url: str
    ca_file: str
    admin_token: str
    sandbox_dir: Path
    state_dir: Path

    def api(self, method: str, path: str, body=None, token: str | None = None):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token or self.admin_token}",
                                              "Content-Type": "application/json"})
        ctx = ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None

    def token(self, role: str) -> str:
        return self.api("POST", "/api/v1/tokens", {"name": f"ui-{role}", "role": role})["token"]

    def wait_job(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            j = self.api("GET", f"/api/v1/jobs/{job_id}")
            if j["state"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                return j
            time.sleep(0.3)


@contextlib.contextmanager
def run_orchestrator(sandbox, env: dict | None = None):
    """`ovault serve --sandbox` in its own state directory, until the block ends."""
    # As root the embedded PostgreSQL runs as `postgres`, which must be able to walk in.
    state = Path(tempfile.mkdtemp(prefix="ovault-ui-", dir="/tmp"))
    os.chmod(state, 0o755)
    target = sandbox.info["target"]
    if not target.get("nfs_url"):  # sandbox without NFS: the target is a plain folder
        Path(target["path"]).mkdir(parents=True, exist_ok=True)
    log = open(state / "serve.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--sandbox", str(sandbox.dir),
                          "--state-dir", str(state)], cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
                         env={**os.environ, "OVAULT_POLICIES_GC_SCHEDULE": "",
                              "OVAULT_POLICIES_VERIFY_SCHEDULE": "", **(env or {})})
    try:
        deadline = time.monotonic() + 60
        client = state / "client.json"
        while True:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ovault serve did not start:\n" + (state / "serve.log").read_text()[-3000:])
            if client.exists():
                info = json.loads(client.read_text())
                try:
                    ctx = ssl.create_default_context(cafile=info["ca_file"])
                    urllib.request.urlopen(info["url"] + "/healthz", context=ctx, timeout=2).read()
                    break
                except (OSError, ValueError):
                    pass
            time.sleep(0.2)
        yield Orchestrator(info["url"], info["ca_file"], Path(info["token_file"]).read_text().strip(),
                           sandbox.dir, state)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def orchestrator(sandbox):
    with run_orchestrator(sandbox) as o:
        yield o


@pytest.fixture(scope="module")
def portal(orchestrator):
    vms = [{k: v.get(k) for k in ("id", "name", "status", "memory")}
           for v in orchestrator.api("GET", "/api/v1/vms")["items"]]
    p = Portal(orchestrator.url, orchestrator.ca_file, vms,
               overrides={"ovault": {"config": {"apiBaseUrl": "/ovault-api/", "pollIntervalMs": 250}}}).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context_options() -> dict:
    """Extra Playwright context options (a module overrides this, e.g. for the user's time zone)."""
    return {}


@pytest.fixture
def page(browser, portal, context_options):
    """A 1280×800 page; anything not served by the portal stand-in is blocked and reported."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, **context_options)
    external, errors = [], []

    def gate(route):
        if route.request.url.startswith(portal.url + "/") or route.request.url.startswith(portal.url.replace("http", "ws", 1)):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()
    ctx.route("**/*", gate)
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.external, pg.errors = external, errors
    yield pg
    ctx.close()
    assert not external, f"the plugin reached outside the portal: {external}"
    assert not errors, f"uncaught errors in the page: {errors}"
