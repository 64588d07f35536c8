"""One policy tick over many VMs: how long until every member's backup has
started, how the API answers meanwhile, and the orchestrator's memory.

    .venv/bin/python bench/policy_scale.py --vms 500 [--hosts 4] [--disk-size 16M] [--max-seconds 600]

Starts a sandbox without NFS (`ovault sandbox up --no-nfs`; the target is a local
directory), then `ovault serve --sandbox` with the default settings (limits,
scheduler interval, job claiming). Measures `GET /api/v1/vms` and `/api/v1/jobs`
while idle, then creates a policy whose rule (`name_regex: "."`) matches every VM,
scheduled once a day at the next full minute (so exactly one tick fires), and
measures, while the tick's job runs:

- fire time → the tick's job created, → first VM started, → all VMs started
  (the machines' `started_at`), and how many finished by the end;
- p50/p99 of the two list calls, requested back to back from one client (idle:
  the first call of each apart, as it may come before the service's inventory of
  the engine's VMs has its first listing);
- the orchestrator process's RSS (sampled each second; its embedded PostgreSQL is
  a separate process and not included), its CPU time per idle call and during
  the run, and the machine's load average at the end.

It stops at all-started or after --max-seconds, prints one JSON document and writes
it to /var/tmp/ovault-bench/policy_scale.json. Nothing is tuned for the bench.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import Orchestrator  # noqa: E402  (the e2e tests' client for `ovault serve`)


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] * 1000, 1)


def lat(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "max_ms": pct(xs, 100)}


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds a process has used."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def ts(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


class Sampler(threading.Thread):
    """Alternates the two list calls and samples the RSS, until stopped."""

    def __init__(self, o: Orchestrator):
        super().__init__(daemon=True)
        self.o, self.stop = o, threading.Event()
        self.times: dict[str, list[float]] = {"vms": [], "jobs": []}
        self.rss: list[float] = []
        self.errors = 0

    def call(self, which: str) -> None:
        path = "/api/v1/vms?limit=500" if which == "vms" else "/api/v1/jobs?limit=50"
        t0 = time.monotonic()
        try:
            self.o.api("GET", path, expect=200)
        except Exception:
            self.errors += 1
            return
        self.times[which].append(time.monotonic() - t0)

    def run(self) -> None:
        last_rss = 0.0
        while not self.stop.is_set():
            for which in ("vms", "jobs"):
                self.call(which)
            if time.monotonic() - last_rss >= 1:
                r = rss_mib(self.o.proc.pid)
                if r:
                    self.rss.append(r)
                last_rss = time.monotonic()


def start_sandbox(d: Path, args) -> subprocess.Popen:
    log = open(d.parent / "sandbox.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(d),
                          "--hosts", str(args.hosts), "--vms", str(args.vms), "--disk-size", args.disk_size,
                          "--no-nfs"], cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    while not (d / "sandbox.json").exists():
        if p.poll() is not None:
            raise SystemExit("sandbox up failed:\n" + (d.parent / "sandbox.log").read_text()[-3000:])
        time.sleep(0.2)
    return p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=500)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--disk-size", default="16M", help="boot disk size (the sandbox makes at least 64 MiB)")
    ap.add_argument("--max-seconds", type=float, default=600, help="stop measuring the run after this")
    ap.add_argument("--idle-requests", type=int, default=30)
    ap.add_argument("--dir", type=Path, help="work directory (default: a new one in /var/tmp)")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="ovault-policy-scale-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)    # the embedded PostgreSQL runs as another user and must reach its directory
    out: dict = {"vms": args.vms, "hosts": args.hosts, "disk_size": args.disk_size}
    t0 = time.monotonic()
    sb = start_sandbox(base / "sandbox", args)
    out["sandbox_ready_s"] = round(time.monotonic() - t0, 1)
    print(f"sandbox with {args.vms} VMs ready in {out['sandbox_ready_s']} s", flush=True)
    o = Orchestrator(base / "sandbox", base / "orch")
    o.env = dict(os.environ)            # the defaults, not the e2e tests' short leases and polls
    try:
        o.start(timeout=300)
        out["orchestrator_rss_idle_mib"] = rss_mib(o.proc.pid)
        s = Sampler(o)
        cpu = {}
        for which in ("vms", "jobs"):     # the orchestrator's own CPU per call, idle
            c0 = cpu_s(o.proc.pid)
            for _ in range(args.idle_requests):
                s.call(which)
            c1 = cpu_s(o.proc.pid)
            if c0 is not None and c1 is not None:
                cpu[which] = round((c1 - c0) / args.idle_requests * 1000, 1)
        # the first call of each may come before the service's inventory has its first
        # listing (it then asks the engine): shown apart, and the rest's percentiles
        out["idle"] = {k: {**lat(v[1:]), "first_call_ms": round(v[0] * 1000, 1) if v else None,
                           "cpu_ms_per_call": cpu.get(k)} for k, v in s.times.items()}
        print("idle:", json.dumps(out["idle"]), flush=True)
        s.times = {"vms": [], "jobs": []}

        now = datetime.now(timezone.utc)
        fire = (now + timedelta(seconds=75)).replace(second=0, microsecond=0)   # 15..75 s ahead
        pol = o.api("POST", "/api/v1/policies", {
            "name": "scale", "schedule": f"{fire.minute} {fire.hour} * * *", "timezone": "UTC",
            "retention": {"keep_last": 1}, "rules": {"name_regex": "."}}, expect=201)
        members = pol.get("members") or []
        out["policy_members"] = len(members)
        print(f"policy with {len(members)} members fires at {fire.isoformat()}", flush=True)
        time.sleep(max(0.0, (fire - datetime.now(timezone.utc)).total_seconds()))
        s.start()                       # "under load": from the fire time on
        cpu_fire = cpu_s(o.proc.pid)
        job_id = None
        while job_id is None:
            ticks = o.api("GET", f"/api/v1/policies/{pol['id']}/ticks", expect=200)
            items = ticks.get("items", ticks) if isinstance(ticks, dict) else ticks
            job_id = next((t["job_id"] for t in items if t.get("job_id")), None)
            if datetime.now(timezone.utc) > fire + timedelta(minutes=5):
                raise SystemExit(f"no tick fired: {ticks}")
            time.sleep(0.5)
        print(f"tick fired: job {job_id}", flush=True)
        deadline = time.monotonic() + args.max_seconds
        while True:
            j = o.job(job_id)
            started = [ts(m["started_at"]) for m in j["machines"] if m["started_at"]]
            if len(started) == len(j["machines"]) or time.monotonic() > deadline or \
                    j["state"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(2)
        s.stop.set()
        s.join(60)
        created = ts(j["created_at"])
        out["job"] = {
            "machines": len(j["machines"]), "state": j["state"],
            "started": len(started),
            "finished": sum(1 for m in j["machines"] if m["state"] in ("succeeded", "failed", "canceled")),
            "succeeded": sum(1 for m in j["machines"] if m["state"] == "succeeded"),
            "fire_to_job_created_s": round((created - fire).total_seconds(), 1),
            "fire_to_first_started_s": round((min(started) - fire).total_seconds(), 1) if started else None,
            "fire_to_last_started_s": round((max(started) - fire).total_seconds(), 1) if started else None,
            "all_started": len(started) == len(j["machines"]),
            "measured_for_s": round((datetime.now(timezone.utc) - fire).total_seconds(), 1),
        }
        out["under_load"] = {k: lat(v) for k, v in s.times.items()}
        c = cpu_s(o.proc.pid)
        if c is not None and cpu_fire is not None:
            out["orchestrator_cpu_s_during_run"] = round(c - cpu_fire, 1)
        with open("/proc/loadavg") as f:
            out["load_average_at_end"] = f.read().split()[:3]
        out["request_errors"] = s.errors
        out["orchestrator_rss_peak_mib"] = round(max(s.rss), 1) if s.rss else None
        out["orchestrator_rss_median_mib"] = round(statistics.median(s.rss), 1) if s.rss else None
        o.api("PATCH", f"/api/v1/policies/{pol['id']}", {"enabled": False})
        if j["state"] not in ("succeeded", "failed", "canceled"):
            o.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    finally:
        o.stop()
        os.killpg(sb.pid, signal.SIGTERM)
        try:
            sb.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(sb.pid, signal.SIGKILL)
    res = Path("/var/tmp/ovault-bench")
    res.mkdir(parents=True, exist_ok=True)
    (res / "policy_scale.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    print(f"work directory (remove it when done): {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
