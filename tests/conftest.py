"""Fixtures shared by every test folder.

`sandbox` is one real lab per test session (engine simulator, imageio daemons,
qemu, nfs-ganesha), run as a child process exactly as `ovault sandbox up`
runs it. Only one NFS server can run per machine (ports 2049/111), so every
test that needs NFS uses this sandbox's target (`nfs_target`).
"""
from __future__ import annotations

import gc
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import Sandbox, running_sandbox

# In-process services log through structlog; configured once, quietly, so that
# threads outliving a test do not print debug lines into the report.
from orchestrator import logs as _logs

_logs.configure(level="WARNING", fmt="json")

# The tier of a test is the folder it lives in; the marker follows from it, so
# `-m` selections (./dev quick) cannot miss a test that forgot its pytestmark.
_TIERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "browser": "browser"}


def pytest_collection_modifyitems(config, items):
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        try:
            tier = Path(str(item.path)).resolve().relative_to(tests_dir).parts[0]
        except ValueError:
            continue
        if tier in _TIERS:
            item.add_marker(_TIERS[tier])


@pytest.fixture(scope="module", autouse=True)
def _garbage_collected_per_module():
    """Objects a module leaked (an unclosed socket, transport or file) are collected, and
    reported as an error, at the end of that module, not at a random later test."""
    yield
    gc.collect()


def _processes_under(path: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", path], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "pgrep" not in l]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory) -> Sandbox:
    d = tmp_path_factory.mktemp("sandbox")
    # Developers running two suites at once can leave NFS out of this one.
    extra = ["--no-nfs"] if os.environ.get("OVAULT_TEST_SANDBOX_NO_NFS") == "1" else []
    # A start that fails or times out stops the whole process group too (nothing left behind).
    with running_sandbox(d, "--hosts", "2", "--vms", "3", *extra, start_timeout=180) as sb:
        yield sb
    left = _processes_under(str(d))
    assert not left, f"sandbox left processes behind: {left}"


@pytest.fixture(scope="session")
def state_root():
    """A folder for orchestrator state dirs that the `postgres` user can traverse
    (pytest's own tmp dirs are 0700; the embedded PostgreSQL runs as postgres)."""
    import shutil
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="ovault-test-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    if not os.environ.get("OVAULT_TEST_KEEP_STATE"):  # keep logs and databases to debug
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def nfs_target(sandbox) -> tuple[str, Path]:
    """(nfs:// URL, local folder) of the sandbox's real NFSv3 export."""
    t = sandbox.info["target"]
    return t["nfs_url"], Path(t["path"])


@pytest.fixture
def conn(sandbox):
    conn = sandbox.connect()
    yield conn
    conn.close()


def _ours(left: dict) -> dict:
    """What ovault put in the engine and must have taken away again: every
    transfer, engine backup, lock, and the snapshots it created ("ovault ..."
    descriptions; tests make snapshots of their own too)."""
    out = {k: v for k, v in left.items() if v and k != "snapshots"}
    snaps = [s for s in left.get("snapshots", []) if s["description"].startswith("ovault ")]
    if snaps:
        out["snapshots"] = snaps
    return out


def _settled(sandbox, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        busy = _ours(sandbox.leftovers())
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.2)


@pytest.fixture
def no_leftovers(sandbox):
    """Asserts, after the test, that the engine holds nothing half-done."""
    yield
    busy = _settled(sandbox, 15)
    assert not busy, f"engine leftovers: {busy}"


@pytest.fixture(autouse=True)
def _no_ovault_snapshots_left(request):
    """Every test that used the sandbox must leave no ovault snapshot behind:
    one left over breaks later tests of the same VM far from its cause."""
    yield
    if "sandbox" not in request.fixturenames:
        return
    sandbox = request.getfixturevalue("sandbox")
    snaps = [s for s in sandbox.leftovers()["snapshots"] if s["description"].startswith("ovault ")]
    if snaps:
        snaps = _settled(sandbox, 15).get("snapshots")
    assert not snaps, f"ovault snapshots left in the engine: {snaps}"
