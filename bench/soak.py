"""A soak: many backups in a row through the product, watching for growth.

    .venv/bin/python bench/soak.py [--backups 100] [--every 10] [--full-every 10] [--disk-size 256M]

Starts a sandbox without NFS (`ovault sandbox up --no-nfs`, 2 hosts, 3 sample VMs;
the target is a local directory), then `ovault serve --sandbox` with the default
settings, and runs `--backups` backups one after the other, alternating between
`db-primary` (CBT: incrementals from the engine's checkpoints) and `legacy-erp`
(raw disk: snapshot backups, incremental against the last one in the store); every
`--full-every`-th backup of a VM is requested `full`. Before each backup the guest
"writes": 1 MiB of random data at a random offset of the boot disk (through the
sandbox's admin API).

Every `--every` backups (and at the start and end) it samples:
- the `ovault serve` process's RSS and open file descriptors (`/proc`);
- catalog connections: the embedded PostgreSQL's client backends (children of
  the postmaster whose title names the `ovault` database);
- engine objects left: snapshots made by ovault, active image transfers,
  unfinished engine backups (the sandbox's `/sandbox/leftovers`), and the
  checkpoints the engine holds for each VM.

A failed backup is counted (and its error kept) and the soak goes on. Prints one
JSON document and writes it to /var/tmp/ovault-bench/soak.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import Orchestrator, Sandbox  # noqa: E402  (the e2e tests' clients)

VMS = ("db-primary", "legacy-erp")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def catalog_connections(state_dir: Path) -> int | None:
    """Client backends of the embedded server (`postgres: ovault ovault ...`)."""
    pidfile = state_dir / "pg" / "postgres" / "data" / "postmaster.pid"
    try:
        pm = pidfile.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    n = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            ppid = stat.rsplit(")", 1)[1].split()[1]
            if ppid != pm:
                continue
            title = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if title.startswith("postgres: ovault ovault"):
            n += 1
    return n


def engine_objects(sb: Sandbox, conn) -> dict:
    left = sb.leftovers()
    vms = conn.system_service().vms_service()
    cps = {}
    for name in VMS:
        vm = sb.vm(name)
        cps[name] = len(vms.vm_service(vm["id"]).checkpoints_service().list())
    return {"ovault_snapshots": sum(1 for s in left["snapshots"] if s["description"].startswith("ovault ")),
            "transfers": len(left["transfers"]), "engine_backups": len(left["backups"]),
            "locked_disks": len(left["locked_disks"]), "checkpoints": cps}


def sample(n: int, o: Orchestrator, sb: Sandbox, conn, t0: float) -> dict:
    return {"after": n, "elapsed_s": round(time.monotonic() - t0, 1), "rss_mib": rss_mib(o.proc.pid),
            "fds": open_fds(o.proc.pid), "catalog_connections": catalog_connections(o.state_dir),
            **engine_objects(sb, conn)}


def parse_size(s: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1].upper()] if s[-1].upper() in units else int(s)


def start_sandbox(d: Path, disk_size: str) -> subprocess.Popen:
    log = open(d.parent / "sandbox.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(d),
                          "--hosts", "2", "--vms", "3", "--disk-size", disk_size, "--no-nfs"],
                         cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    while not (d / "sandbox.json").exists():
        if p.poll() is not None:
            raise SystemExit("sandbox up failed:\n" + (d.parent / "sandbox.log").read_text()[-3000:])
        time.sleep(0.2)
    return p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backups", type=int, default=100)
    ap.add_argument("--every", type=int, default=10, help="sample every N backups")
    ap.add_argument("--full-every", type=int, default=10, help="every Nth backup of a VM is full")
    ap.add_argument("--disk-size", default="256M", help="boot disk size of the sample VMs")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--dir", type=Path, help="work directory (default: a new one in /var/tmp)")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="ovault-soak-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # the embedded PostgreSQL runs as `postgres` when we are root
    rnd = random.Random(args.seed)
    out: dict = {"backups": args.backups, "disk_size": args.disk_size, "full_every": args.full_every,
                 "samples": [], "failed": [], "modes": {}}
    sbp = start_sandbox(base / "sandbox", args.disk_size)
    sb = Sandbox(json.loads((base / "sandbox" / "sandbox.json").read_text()), base / "sandbox")
    o = Orchestrator(base / "sandbox", base / "orch")
    o.env = {**os.environ, "OVAULT_POLICIES_GC_SCHEDULE": "", "OVAULT_POLICIES_VERIFY_SCHEDULE": ""}
    conn = sb.connect()
    try:
        o.start(timeout=300)
        t0 = time.monotonic()
        out["samples"].append(sample(0, o, sb, conn, t0))
        print(json.dumps(out["samples"][-1]), flush=True)
        durations = []
        for i in range(1, args.backups + 1):
            name = VMS[(i - 1) % len(VMS)]
            vm = sb.vm(name)
            nth = (i - 1) // len(VMS) + 1
            mode = "full" if nth % args.full_every == 1 or args.full_every == 1 else "auto"
            size = max(64 << 20, parse_size(args.disk_size))
            off = rnd.randrange(0, max(1, size - (1 << 20))) & ~0xFFFF
            sb.write(vm["id"], off, 1 << 20, pattern="random", seed=i)
            ts = time.monotonic()
            j = o.wait_job(o.backup([vm["id"]], mode)["id"], timeout=600)
            durations.append(time.monotonic() - ts)
            m = j["machines"][0]
            if j["state"] != "succeeded":
                out["failed"].append({"n": i, "vm": name, "error": m.get("error") or j.get("error")})
            else:
                b = o.api("GET", f"/api/v1/backups/{m['backup_id']}", expect=200)
                key = f"{b['method']}/{b['mode']}"
                out["modes"][key] = out["modes"].get(key, 0) + 1
            if i % args.every == 0 or i == args.backups:
                out["samples"].append(sample(i, o, sb, conn, t0))
                print(json.dumps(out["samples"][-1]), flush=True)
        out["backup_seconds"] = {"mean": round(sum(durations) / len(durations), 2),
                                 "max": round(max(durations), 2)}
        out["total_s"] = round(time.monotonic() - t0, 1)
        first, last = out["samples"][0], out["samples"][-1]
        out["growth"] = {k: (round(last[k] - first[k], 1) if last[k] is not None and first[k] is not None
                             else None) for k in ("rss_mib", "fds", "catalog_connections")}
    finally:
        conn.close()
        o.stop()
        os.killpg(sbp.pid, signal.SIGTERM)
        try:
            sbp.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(sbp.pid, signal.SIGKILL)
    res = Path("/var/tmp/ovault-bench")
    res.mkdir(parents=True, exist_ok=True)
    (res / "soak.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    print(f"work directory (remove it when done): {base}")
    return 0 if not out["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
