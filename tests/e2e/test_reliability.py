"""Issue 9 acceptance (the parts about the orchestrator itself): the embedded
PostgreSQL killed under a running backup, one operation per VM at a time,
checks made before the 202, and a short imageio outage during a copy."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.helpers import Orchestrator, wait

pytestmark = pytest.mark.e2e

# Slow the transfer polling down so the machine is in `transfer` long enough.
HOLD_TRANSFER = dict(kind="engine", method="GET", path=r"^/imagetransfers/[^/]+$", delay=1.5, count=6)


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "reliability").start()
    yield o
    o.stop()


def _postmaster_pid(orch) -> int:
    pidfile = orch.state_dir / "pg" / "postgres" / "data" / "postmaster.pid"
    try:
        return int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):  # between servers
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _metric(orch, name: str) -> float:
    import urllib.request
    req = urllib.request.Request(orch.url + "/metrics", headers={"Authorization": f"Bearer {orch.token}"})
    with urllib.request.urlopen(req, context=orch.ssl, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def test_postmaster_sigkilled_during_transfer_job_resumes(orch, sandbox, no_leftovers):
    vm = sandbox.vm("db-primary")
    before = _metric(orch, "ovault_catalog_restarts_total")
    sandbox.fault(**HOLD_TRANSFER)
    try:
        job = orch.backup([vm["id"]])
        wait(lambda: orch.job(job["id"])["machines"][0]["state"] == "transfer", timeout=60,
             what="machine in transfer")
        pid = _postmaster_pid(orch)
        os.kill(pid, signal.SIGKILL)
        wait(lambda: not _alive(pid), timeout=10, what="postmaster gone")
        # ovault starts it again by itself
        wait(lambda: _postmaster_pid(orch) != pid and _alive(_postmaster_pid(orch)), timeout=60,
             what="postmaster restarted")
    finally:
        sandbox.clear_faults()
    # The API answers 503 (database unavailable) until the server is back.
    states = []

    def ended():
        doc = orch.api("GET", f"/api/v1/jobs/{job['id']}")
        states.append(doc.get("state") or doc.get("code"))
        return doc.get("state") in ("succeeded", "failed", "canceled") and doc
    j = wait(ended, timeout=240, what="the job to end")
    assert j["state"] == "succeeded", j
    m = j["machines"][0]
    b = orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
    assert b["status"] == "succeeded"
    assert _metric(orch, "ovault_catalog_restarts_total") == before + 1
    log = (orch.state_dir / "serve.log").read_text()
    assert "embedded PostgreSQL restarted" in log
    # no_leftovers: no transfer, engine backup, lock or ovault snapshot stays
