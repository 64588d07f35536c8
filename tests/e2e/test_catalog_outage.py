"""The embedded PostgreSQL down while a backup runs (issue 9: a catalog that
cannot be reached is lost ownership, not a failure).

The database is taken down for real: its postmaster is SIGKILLed and its data
directory made unreadable for the server user, so ovault's supervisor cannot
start it again until the test gives the directory back (what a full or failing
disk under PGDATA looks like to the orchestrator).

- Down for a few seconds while the backup finalizes its image transfer: the
  machine stops (it is not failed), resumes once the database is back, and the
  backup succeeds.
- Down past `jobs.catalog_unreachable_release_seconds`: while it is still down,
  nothing of the backup is left in the engine (transfer, and the engine backup of
  a CBT backup or the snapshot of a snapshot backup); once it is back the job
  ends failed naming the cause, and the backup row is failed.
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import pytest

from tests.helpers import Orchestrator, wait

pytestmark = pytest.mark.e2e

RELEASE_AFTER = 10
# The machine is inside POST .../finalize while the database goes down.
HOLD_FINALIZE = dict(kind="engine", method="POST", path=r"^/imagetransfers/[^/]+/finalize$",
                     delay=4.0, count=1)


@pytest.fixture(scope="module")
def orch(sandbox, state_root):
    o = Orchestrator(sandbox.dir, state_root / "catalog-outage",
                     env={"OVAULT_JOBS_CATALOG_UNREACHABLE_RELEASE_SECONDS": str(RELEASE_AFTER),
                          # restart attempts every second: the short outage ends when the test says
                          "OVAULT_DATABASE_RESTART_BACKOFF_MAX": "1"}).start()
    yield o
    _database_back(o)
    o.stop()


def _data_dir(orch):
    return orch.state_dir / "pg" / "postgres" / "data"


def _postmaster_pid(orch) -> int:
    try:
        return int((_data_dir(orch) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _database_down(orch):
    """SIGKILL the postmaster and keep ovault's supervisor from starting it."""
    pid = _postmaster_pid(orch)
    _data_dir(orch).chmod(0)
    os.kill(pid, signal.SIGKILL)
    wait(lambda: not _alive(pid), timeout=10, what="postmaster gone")
    return pid


def _database_back(orch):
    _data_dir(orch).chmod(0o700)


def _doc(orch, path):
    """GET that tolerates the 503s of a database outage."""
    return orch.api("GET", path)


def _metric(orch, name: str) -> float:
    req = urllib.request.Request(orch.url + "/metrics", headers={"Authorization": f"Bearer {orch.token}"})
    with urllib.request.urlopen(req, context=orch.ssl, timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"metric {name} not exported")


def _ours(sandbox):
    left = sandbox.leftovers()
    return {"transfers": left["transfers"], "backups": left["backups"],
            "snapshots": [s for s in left["snapshots"] if s["description"].startswith("ovault ")]}


def _log(orch, job_id: str, event: str) -> list[dict]:
    """serve.log lines of one job with this `event` (structured JSON lines)."""
    out = []
    for line in (orch.state_dir / "serve.log").read_text().splitlines():
        if job_id in line and event in line:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == event and doc.get("job_id") == job_id:
                out.append(doc)
    return out


def _start_and_take_down(orch, sandbox, vm_name):
    """A backup of `vm_name`; the database goes down while the machine is inside
    POST .../finalize of its image transfer (the disk is copied, the step is not done)."""
    vm = sandbox.vm(vm_name)
    rule = sandbox.fault(**HOLD_FINALIZE)
    job = orch.backup([vm["id"]])

    def held():  # the rule fired: the finalize request is being held now
        return not [r for r in sandbox.admin("GET", "/faults") if r["id"] == rule["id"] and r["count"]]
    try:
        wait(held, timeout=120, what="the transfer's finalize request")
        _database_down(orch)
    finally:
        sandbox.clear_faults()
    return vm, job


def _wait_end(orch, job, timeout=240):
    def ended():
        doc = _doc(orch, f"/api/v1/jobs/{job['id']}")
        return doc.get("state") in ("succeeded", "failed", "canceled") and doc
    return wait(ended, timeout=timeout, what="the job to end")


def test_short_outage_mid_transfer_the_backup_succeeds(orch, sandbox, no_leftovers):
    pid = 0
    try:
        vm, job = _start_and_take_down(orch, sandbox, "db-primary")
        # down until the machine has met the outage (a few seconds)
        wait(lambda: _log(orch, job["id"], "catalog unreachable: machine stopped (not failed)"),
             timeout=30, what="the machine stopped")
    finally:
        _database_back(orch)
    wait(lambda: _alive(_postmaster_pid(orch)) and _postmaster_pid(orch) != pid, timeout=90,
         what="postmaster restarted")
    j = _wait_end(orch, job)
    m = j["machines"][0]
    assert (j["state"], m["state"], m["error"]) == ("succeeded", "succeeded", None), j
    b = orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
    assert b["status"] == "succeeded"
    assert _log(orch, job["id"], "catalog unreachable: machine stopped (not failed)")
    assert not _log(orch, job["id"], "catalog unreachable: engine objects released")
    # the machine never went to cleanup
    tos = [d["to"] for d in _log(orch, job["id"], "state")]
    assert "cleanup" not in tos and tos[-1] == "succeeded", tos


# db-primary backs up through CBT (an engine backup), legacy-erp (raw disk) through a snapshot
@pytest.mark.parametrize("vm_name,held", [("db-primary", "engine backup"), ("legacy-erp", "snapshot")])
def test_long_outage_releases_the_engine_then_fails_with_the_cause(orch, sandbox, no_leftovers, vm_name, held):
    released_before = _metric(orch, "ovault_engine_releases_total")
    try:
        vm, job = _start_and_take_down(orch, sandbox, vm_name)
        t0 = time.monotonic()
        holding = _ours(sandbox)  # the engine backup or the snapshot is held while it is down
        assert holding["backups" if held == "engine backup" else "snapshots"], holding
        # still down: ovault gives the engine objects back by itself
        wait(lambda: _ours(sandbox) == {"transfers": [], "backups": [], "snapshots": []}, timeout=90,
             what="the engine objects released")
        down_for = time.monotonic() - t0
        assert not _alive(_postmaster_pid(orch)), "the database came back before the release"
        (rel,) = wait(lambda: _log(orch, job["id"], "catalog unreachable: engine objects released"),
                      timeout=30, what="the release logged")
        assert any(x.startswith(held + " ") for x in rel["released"]), rel
    finally:
        _database_back(orch)
    assert down_for >= RELEASE_AFTER - 1
    j = _wait_end(orch, job)
    m = j["machines"][0]
    assert (j["state"], m["state"]) == ("failed", "failed"), j
    assert m["error"].startswith("catalog unreachable for "), m["error"]
    assert held in m["error"] and "run it again" in m["error"], m["error"]
    b = orch.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
    assert b["status"] == "failed"
    assert _metric(orch, "ovault_engine_releases_total") == released_before + 1
    tos = [d["to"] for d in _log(orch, job["id"], "state")]
    assert tos[-2:] == ["cleanup", "failed"], tos
    # the VM is free again: the next backup works
    again = orch.wait_job(orch.backup([vm["id"]])["id"], timeout=240)
    assert again["state"] == "succeeded", again
