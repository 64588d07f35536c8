"""Small synchronous helpers for tests that drive the sandbox."""
from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

# Builds the tests reuse (the Ansible venv, a Debian root): kept outside the
# checkout so a fresh clone on the same machine (CI) finds them; rebuilt when absent.
CACHE_DIR = Path(os.environ.get("OVAULT_TEST_CACHE", "/var/cache/ovault-tests"))

from sandbox.storage import image_sha256 as image_digest  # noqa: F401  (tests compare content)


class Sandbox:
    def __init__(self, info: dict, dir: Path):
        self.info, self.dir = info, dir
        e = info["engine"]
        self.ssl = ssl.create_default_context(cafile=e["ca_file"])

    @property
    def engine(self) -> dict:
        return self.info["engine"]

    def vm(self, name: str) -> dict:
        return next(v for v in self.info["vms"] if v["name"] == name)

    def connect(self):
        import ovirtsdk4 as sdk
        e = self.engine
        return sdk.Connection(url=e["api"], username=e["username"], password=e["password"],
                              ca_file=e["ca_file"])

    def admin(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.info["admin_url"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=120) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"admin {method} {path}: {e.code} {e.read()[:300]!r}") from None

    def write(self, vm_id: str, offset: int, length: int, pattern=0xab, disk_id=None, seed=None):
        body = {"offset": offset, "length": length, "pattern": pattern}
        if disk_id:
            body["disk_id"] = disk_id
        if seed is not None:
            body["seed"] = seed
        return self.admin("POST", f"/vms/{vm_id}/writes", body)

    def digest(self, disk_id: str, snapshot: str | None = None) -> str:
        q = f"?snapshot={snapshot}" if snapshot else ""
        return self.admin("GET", f"/disks/{disk_id}/digest{q}")["sha256"]

    def leftovers(self) -> dict:
        return self.admin("GET", "/leftovers")

    def fault(self, **kw):
        return self.admin("POST", "/faults", kw)

    def clear_faults(self):
        return self.admin("DELETE", "/faults")


@contextlib.contextmanager
def running_sandbox(d: Path, *args: str, start_timeout: float = 90):
    """`ovault sandbox up --dir d ARGS` in its own process group, until the block ends:
    yields the Sandbox once sandbox.json exists (the log is in d/sandbox.log), then
    stops it with SIGTERM, and SIGKILLs the group if it lingers."""
    import signal
    import sys
    root = Path(__file__).resolve().parent.parent
    with open(d / "sandbox.log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(d), *args],
                             cwd=root, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + start_timeout
    started = False
    try:
        while not (d / "sandbox.json").exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sandbox did not start:\n" + (d / "sandbox.log").read_text()[-3000:])
            time.sleep(0.2)
        started = True
        yield Sandbox(json.loads((d / "sandbox.json").read_text()), d)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if p.poll() is None or not started:
                # a start that failed may have left daemons (NFS, imageio) in the group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def allocated_ranges(path: Path) -> list[tuple[int, int]]:
    """Data ranges stored in this qcow2 layer itself (not its backing chain)."""
    out = subprocess.run(["qemu-img", "map", "--output=json", str(path)], check=True,
                         capture_output=True, text=True, cwd=Path(path).parent).stdout
    ranges = []
    for m in json.loads(out):
        if m.get("depth") == 0 and m.get("data"):
            if ranges and ranges[-1][1] == m["start"]:
                ranges[-1] = (ranges[-1][0], m["start"] + m["length"])
            else:
                ranges.append((m["start"], m["start"] + m["length"]))
    return ranges


def wait(pred, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Orchestrator:
    """`ovault serve --sandbox DIR` as a child process, with a small REST client."""

    def __init__(self, sandbox_dir: Path, state_dir: Path, env: dict | None = None,
                 dsn: str | None = None):
        import os
        self.sandbox_dir, self.state_dir = Path(sandbox_dir), Path(state_dir)
        self.env = {**os.environ, "OVAULT_JOBS__LEASE_SECONDS": "4", "OVAULT_TIMEOUTS__POLL": "0.3",
                    "OVAULT_JOBS__CLAIM_INTERVAL": "0.3",
                    # no daily gc / weekly verify firing at start depending on the hour
                    "OVAULT_POLICIES_GC_SCHEDULE": "", "OVAULT_POLICIES_VERIFY_SCHEDULE": "", **(env or {})}
        if dsn:
            self.env["OVAULT_DATABASE__DSN"] = dsn
        self.proc = None
        self.url = self.token = None
        self.ssl = None

    def start(self, timeout=90):
        import sys
        (self.state_dir / "client.json").unlink(missing_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "serve", "--sandbox", str(self.sandbox_dir),
                 "--state-dir", str(self.state_dir), "--listen", "127.0.0.1:0"],
                cwd=Path(__file__).resolve().parent.parent, env=self.env, stdout=log,
                stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        cj = self.state_dir / "client.json"
        while not cj.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("ovault serve did not start:\n" +
                                     (self.state_dir / "serve.log").read_text()[-3000:])
            time.sleep(0.1)
        info = json.loads(cj.read_text())
        self.url = info["url"]
        self.token = Path(info["token_file"]).read_text().strip()
        self.ssl = ssl.create_default_context(cafile=info["ca_file"])
        return self

    def kill(self):
        """SIGKILL: no clean-up of any kind."""
        import os
        import signal
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        import os
        import signal
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def api(self, method: str, path: str, body=None, expect=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=60) as r:
                status, doc = r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            status, doc = e.code, json.loads(e.read() or b"null")
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {doc}"
        return doc

    def backup(self, vm_ids, mode="auto") -> dict:
        return self.api("POST", "/api/v1/backups", {"vm_ids": list(vm_ids), "mode": mode}, expect=202)["job"]

    def restore(self, backup_id, **body) -> dict:
        return self.api("POST", f"/api/v1/backups/{backup_id}/restore", body, expect=202)["job"]

    def job(self, job_id) -> dict:
        return self.api("GET", f"/api/v1/jobs/{job_id}", expect=200)

    def wait_job(self, job_id, timeout=180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            j = self.job(job_id)
            if j["state"] in ("succeeded", "failed", "canceled"):
                return j
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {j['state']}: {j}")
            time.sleep(0.3)

    def cancel_unfinished(self, timeout=120) -> None:
        """Cancel every queued or running job and wait for them to end (a failed test
        then leaves no backup in the engine for the next module to trip over)."""
        for state in ("running", "queued"):
            for j in self.api("GET", f"/api/v1/jobs?state={state}&limit=200", expect=200)["items"]:
                self.api("POST", f"/api/v1/jobs/{j['id']}/cancel")
                self.wait_job(j["id"], timeout)

    def backups(self, vm_id=None) -> list:
        q = f"?vm_id={vm_id}&limit=200" if vm_id else "?limit=200"
        return self.api("GET", f"/api/v1/backups{q}", expect=200)["items"]
