"""End to end through the product, against the SDK's example scripts (issue #11).

    .venv/bin/python -m bench.product_bench [--no-nfs] [--repeat 2] [--disk-size 4G]
        [--data-mib 1280] [--change-mib 200] [--dir DIR] [--keep]

Starts a sandbox with no sample VMs (`ovault sandbox up --vms 0`; with `--no-nfs`
the backup target is a local directory, otherwise the sandbox's NFS export, as in
production), then `ovault serve --sandbox` with the default settings (only the daily
gc and weekly verify schedules are off, so neither fires in the middle). Through the
engine API it creates a VM with one qcow2 disk (`--disk-size`, incremental backup
enabled) holding `--data-mib` of guest-like data (sandbox/content.py: a template
region, text-like data that compresses ~3:1, random data, holes between), and starts it.

Then, for each step, ovault through its REST API against the SDK example, unchanged,
run with a HOME of its own (~/.config/ovirt.conf, as tests/e2e/test_sdk_examples.py):

- full: `POST /api/v1/backups {"mode": "full"}` until the job ends, against
  `backup_vm.py full` into a local directory; `--repeat` pairs, order alternating
  (ovault, sdk, sdk, ovault, ...);
- incremental: `--change-mib` of 1 MiB random blocks at distinct random aligned
  offsets, written through the sandbox's admin API; then ovault `"mode":
  "incremental"` (from its last full's checkpoint) and `backup_vm.py incremental
  --from-checkpoint-uuid` the checkpoint of the SDK's last full. The engine keeps one
  checkpoint chain per VM, and an incremental may start from any checkpoint in it;
  ovault tidies only its own checkpoints and stops at another tool's (statemachines/
  backup.py), so both incrementals cover exactly the same write;
- unchanged: one more incremental of each, nothing written since (what a backup costs
  beside moving data: engine calls, waits, bookkeeping; no goal);
- restore: `POST /api/v1/backups/{full}/restore {"kind": "disks"}` (a new floating
  disk) against `upload_disk.py` of the SDK's full qcow2 into the same storage domain.

Every result is checked: the SDK's files and both restored disks have the VM disk's
digest at the time of the full (the incremental file's chain that after the write), and
both incrementals moved about the changed bytes only. Each measurement records its wall
time, the machine's load average at start and end, the machine's busy CPU seconds
(/proc/stat: everything, the sandbox's imageio, qemu-nbd and movers included, and any
other work on the machine), the orchestrator's own CPU and the SDK script's CPU, and
for ovault jobs when the VM's machine entered each state. One line per measurement,
then JSON in /var/tmp/ovault-bench/product_bench.json. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.policy_scale import cpu_s  # noqa: E402
from sandbox import content  # noqa: E402
from sandbox.cli import parse_size  # noqa: E402
from tests.helpers import Orchestrator, allocated_ranges, image_digest, running_sandbox  # noqa: E402

MiB = 1 << 20
ENDED = ("succeeded", "failed", "canceled")


# --- pure helpers (tests/unit/test_product_bench.py) --------------------------------------
def data_regions(size: int, data_mib: int, seed: str = "bench") -> list:
    """content.layout regions holding `data_mib` MiB: a fifth template (half text, half
    random), then 45 % text-like and 35 % random data of the VM's own, 8 MiB holes between."""
    template = data_mib // 5
    text = data_mib * 45 // 100
    return content.layout(size, template_mib=template, text_mib=text,
                          random_mib=data_mib - template - text, vm_seed=seed)


def scattered_offsets(size: int, total: int, block: int = MiB, seed: int = 11) -> list[int]:
    """Distinct block-aligned offsets, `total // block` of them, sorted."""
    n = total // block
    if n > size // block:
        raise ValueError(f"{total} bytes of {block}-byte blocks do not fit in {size}")
    return sorted(i * block for i in random.Random(seed).sample(range(size // block), n))


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def best(runs: list[dict]) -> dict | None:
    return min(runs, key=lambda r: r["wall_s"]) if runs else None


def median_wall(runs: list[dict]) -> float | None:
    if not runs:
        return None
    w = sorted(r["wall_s"] for r in runs)
    return round((w[(len(w) - 1) // 2] + w[len(w) // 2]) / 2, 2)


# --- measuring ------------------------------------------------------------------------------
def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


GROUPS = (("mover", "mover_cli"), ("imageio", "ovirt-imageio"), ("qemu-nbd", "qemu-nbd"),
          ("orchestrator", "orchestrator.cli serve"), ("sandbox", "orchestrator.cli sandbox"))


def product_cpu(marker: str) -> dict[int, tuple[str, float]]:
    """{pid: (group, CPU seconds)} of the processes whose command line names `marker`
    (the bench's work directory: the sandbox, its imageio daemons, movers and qemu-nbd
    exports, the orchestrator)."""
    out = {}
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        c = cpu_s(int(p.name)) if marker in cmd and p.name.isdigit() else None
        if c is not None:
            out[int(p.name)] = (next((g for g, k in GROUPS if k in cmd), "other"), c)
    return out


def cpu_by_group(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per group between two product_cpu samples (processes that ended in
    between are missed; those that started count whole)."""
    out: dict[str, float] = {}
    for pid, (g, c) in after.items():
        out[g] = out.get(g, 0.0) + c - (before[pid][1] if pid in before else 0.0)
    return {g: round(v, 2) for g, v in sorted(out.items())}


class Meter:
    """Wall time, load average, machine / orchestrator / child-process CPU of one block,
    and the CPU of the product's processes by kind."""
    marker = "\0"  # set to the work directory

    def __init__(self, orch_pid: int):
        self.pid = orch_pid

    def __enter__(self):
        self.load0 = os.getloadavg()
        self.prod0 = product_cpu(self.marker)
        self.busy0, self.orch0 = machine_busy_s(), cpu_s(self.pid)
        self.kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        k, k0 = resource.getrusage(resource.RUSAGE_CHILDREN), self.kids0
        orch = cpu_s(self.pid)
        self.result = {
            "wall_s": round(self.wall, 2),
            "load_start": [round(x, 2) for x in self.load0],
            "load_end": [round(x, 2) for x in os.getloadavg()],
            "machine_cpu_s": round(machine_busy_s() - self.busy0, 1),
            "orchestrator_cpu_s": round(orch - self.orch0, 2) if orch is not None and self.orch0 is not None
            else None,
            "script_cpu_s": round(max(0.0, k.ru_utime + k.ru_stime - k0.ru_utime - k0.ru_stime), 2),
            "product_cpu_s": cpu_by_group(self.prod0, product_cpu(self.marker))}
        return False


def line(step: str, tool: str, r: dict, extra: str = "") -> None:
    print(f"{step:<12} {tool:<6} {r['wall_s']:8.2f} s  load {r['load_start'][0]:.2f}->{r['load_end'][0]:.2f}"
          f"  machine CPU {r['machine_cpu_s']:6.1f} s  orchestrator CPU {r['orchestrator_cpu_s']} s"
          f"  script CPU {r['script_cpu_s']} s  by process {r['product_cpu_s']}  {extra}", flush=True)


def ovault_job(o: Orchestrator, path: str, body: dict) -> tuple[dict, dict]:
    """POST a job and poll it to its end: (job, measurement with the machine's states)."""
    with Meter(o.proc.pid) as m:
        job = o.api("POST", path, body, expect=202)["job"]
        states, last = [], None
        while True:
            job = o.job(job["id"])
            st = job["machines"][0]["state"] if job["machines"] else job["state"]
            if st != last:
                states.append([st, round(time.monotonic() - m.t0, 2)])
                last = st
            if job["state"] in ENDED:
                break
            time.sleep(0.1)
    if job["state"] != "succeeded":
        raise SystemExit(f"ovault job failed: {json.dumps(job)[:3000]}")
    done = job["machines"][0]["bytes_done"] if job["machines"] else None
    return job, {**m.result, "machine_states_at_s": states, "bytes_done": done}


class Sdk:
    """The SDK's example scripts, unchanged, with a HOME of their own."""

    def __init__(self, base: Path, engine: dict):
        found = sorted(ROOT.glob(".cache/sdk/ovirt_engine_sdk_python-*/examples"))
        if not found:
            raise SystemExit("SDK examples missing: run scripts/setup.sh")
        self.examples, self.home = found[-1], base / "home"
        (self.home / ".config").mkdir(parents=True, exist_ok=True)
        (self.home / ".config" / "ovirt.conf").write_text(
            f"[sb]\nengine_url = {engine['url']}\nusername = {engine['username']}\n"
            f"password = {engine['password']}\ncafile = {engine['ca_file']}\n")

    def run(self, orch_pid: int, script: str, *args) -> tuple[str, dict]:
        with Meter(orch_pid) as m:
            p = subprocess.run([sys.executable, script, "-c", "sb", *map(str, args)], cwd=self.examples,
                               env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
                               capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            raise SystemExit(f"{script} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        return p.stdout, m.result


def allocated(path: Path) -> int:
    return sum(b - a for a, b in allocated_ranges(path))


# --- the lab --------------------------------------------------------------------------------
def make_vm(sb, base: Path, size: int, data_mib: int) -> tuple[str, str]:
    """A running VM with one qcow2 disk filled with guest-like data: (vm id, disk id)."""
    from ovirtsdk4 import types
    conn = sb.connect()
    s = conn.system_service()
    vm = s.vms_service().add(types.Vm(name="bench-vm", cluster=types.Cluster(name="Default"),
                                      template=types.Template(name="Blank"), memory=1 << 30))
    vsvc = s.vms_service().vm_service(vm.id)
    att = vsvc.disk_attachments_service().add(types.DiskAttachment(
        disk=types.Disk(name="bench-vm-disk", format=types.DiskFormat.COW, sparse=True,
                        provisioned_size=size, backup=types.DiskBackup.INCREMENTAL,
                        storage_domains=[types.StorageDomain(name="data")]),
        interface=types.DiskInterface.VIRTIO_SCSI, bootable=True, active=True))
    dsvc = s.disks_service().disk_service(att.disk.id)
    deadline = time.monotonic() + 60
    while dsvc.get().status != types.DiskStatus.OK:
        if time.monotonic() > deadline:
            raise SystemExit("the new disk did not become OK")
        time.sleep(0.5)
    # The guest's data goes into the (only) volume the way the sandbox makes its sample
    # disks (sandbox/lab.py): a sparse raw file, converted with zero runs left unallocated.
    img_dir = sb.dir / "storage" / "data" / "images" / att.disk.id
    (vol,) = [p for p in img_dir.iterdir() if not p.name.endswith(".meta") and not p.name.startswith(".")]
    raw = base / "seed.raw"
    content.write_raw(raw, size, data_regions(size, data_mib))
    subprocess.run(["qemu-img", "convert", "-q", "-n", "-f", "raw", "-O", "qcow2", "-S", "64k",
                    str(raw), str(vol)], check=True)
    raw.unlink()
    vsvc.start()
    deadline = time.monotonic() + 60
    while vsvc.get().status != types.VmStatus.UP:
        if time.monotonic() > deadline:
            raise SystemExit("the VM did not come up")
        time.sleep(0.5)
    conn.close()
    return vm.id, att.disk.id


def floating_disk(sb, marker: str) -> str:
    conn = sb.connect()
    try:
        (d,) = [d for d in conn.system_service().disks_service().list()
                if d.description and marker in d.description]
        return d.id
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-nfs", action="store_true", help="target a local directory, not the sandbox's NFS")
    ap.add_argument("--repeat", type=int, default=2, help="full backups per tool, order alternating")
    ap.add_argument("--disk-size", type=parse_size, default=4 << 30)
    ap.add_argument("--data-mib", type=int, default=1280, help="guest data on the disk")
    ap.add_argument("--change-mib", type=int, default=200, help="scattered 1 MiB writes before the incremental")
    ap.add_argument("--dir", type=Path, help="work directory (default: a new one in /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--set", action="append", default=[], metavar="OVAULT_X=V",
                    help="a setting for `ovault serve` (environment), e.g. OVAULT_TIMEOUTS__POLL=0.3")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="ovault-product-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    Meter.marker = str(base)
    base.chmod(0o755)  # the embedded PostgreSQL runs as another user and must reach its directory
    (base / "sandbox").mkdir(exist_ok=True)
    sdk_dir = base / "sdk-backups"
    sdk_dir.mkdir(exist_ok=True)
    out: dict = {"nfs": not args.no_nfs, "disk_size": args.disk_size, "data_mib": args.data_mib,
                 "change_mib": args.change_mib, "cpus": os.cpu_count(), "settings": args.set, "runs": {}}
    runs = out["runs"]
    sb_args = ["--vms", "0"] + (["--no-nfs"] if args.no_nfs else [])
    try:
        with contextlib.ExitStack() as stack:  # the orchestrator stops before the sandbox
            sb = stack.enter_context(running_sandbox(base / "sandbox", *sb_args, start_timeout=180))
            t0 = time.monotonic()
            vm_id, disk_id = make_vm(sb, base, args.disk_size, args.data_mib)
            want_full = sb.digest(disk_id)
            out["vm_ready_s"] = round(time.monotonic() - t0, 1)
            print(f"VM {vm_id} with a {args.disk_size >> 20} MiB disk, {args.data_mib} MiB of data, "
                  f"ready in {out['vm_ready_s']} s", flush=True)
            o = Orchestrator(sb.dir, base / "orch")
            stack.callback(o.stop)
            o.env = {**os.environ, "OVAULT_POLICIES_GC_SCHEDULE": "", "OVAULT_POLICIES_VERIFY_SCHEDULE": "",
                     **dict(kv.split("=", 1) for kv in args.set)}
            o.start(timeout=300)
            sdk = Sdk(base, sb.engine)

            def ovault_backup(step: str, mode: str) -> dict:
                job, r = ovault_job(o, "/api/v1/backups", {"vm_ids": [vm_id], "mode": mode})
                b = o.api("GET", f"/api/v1/backups/{job['machines'][0]['backup_id']}", expect=200)
                (d,) = b["disks"]
                r.update(backup_id=b["id"], mode=b["mode"], method=b["method"], parent_id=b["parent_id"],
                         fallback_reason=b["fallback_reason"], bytes_read=d["bytes_read"],
                         bytes_written=d["bytes_written"], new_bytes=b["new_bytes"],
                         server_s=job_seconds(job))
                line(step, "ovault", r, f"{b['mode']}/{b['method']}, read {d['bytes_read'] / MiB:.0f} MiB, "
                     f"written {(d['bytes_written'] or 0) / MiB:.0f} MiB; states {r['machine_states_at_s']}")
                runs.setdefault(f"{step}_ovault", []).append(r)
                return r

            def sdk_backup(step: str, *argv) -> dict:
                before = set(sdk_dir.iterdir())
                _, r = sdk.run(o.proc.pid, "backup_vm.py", *argv, vm_id, "--backup-dir", sdk_dir)
                (f,) = set(sdk_dir.iterdir()) - before
                r.update(file=f.name, checkpoint=f.name.split(".")[1], file_bytes=f.stat().st_size,
                         allocated_bytes=allocated(f))
                line(step, "sdk", r, f"{f.name}: {r['allocated_bytes'] / MiB:.0f} MiB allocated")
                runs.setdefault(f"{step}_sdk", []).append(r)
                return r

            # full: ovault, sdk, sdk, ovault, ...
            for i in range(args.repeat):
                for tool in (("ovault", "sdk") if i % 2 == 0 else ("sdk", "ovault")):
                    ovault_backup("full", "full") if tool == "ovault" else sdk_backup("full", "full")
            sdk_full = runs["full_sdk"][-1]
            ovault_full = runs["full_ovault"][0]
            if image_digest(sdk_dir / sdk_full["file"]) != want_full:
                raise SystemExit("the SDK's full backup does not hold the disk's content")

            # incremental: the same scattered write for both chains
            offs = scattered_offsets(args.disk_size, args.change_mib * MiB)
            t = time.monotonic()
            for i, off in enumerate(offs):
                sb.write(vm_id, off, MiB, pattern="random", disk_id=disk_id, seed=1000 + i)
            out["scattered_write"] = {"blocks": len(offs), "seconds": round(time.monotonic() - t, 1)}
            want_inc = sb.digest(disk_id)
            print(f"wrote {len(offs)} scattered 1 MiB blocks in {out['scattered_write']['seconds']} s", flush=True)
            r = ovault_backup("incremental", "incremental")
            changed = len(offs) * MiB
            if r["mode"] != "incremental" or r["parent_id"] != runs["full_ovault"][-1]["backup_id"] \
                    or not changed <= (r["bytes_read"] or 0) <= 1.1 * changed + 4 * MiB:
                raise SystemExit(f"ovault's incremental is not one on its last full, or read more: {r}")
            r = sdk_backup("incremental", "incremental", "--from-checkpoint-uuid", sdk_full["checkpoint"])
            if not changed <= r["allocated_bytes"] <= 1.1 * changed + 4 * MiB:
                raise SystemExit(f"the SDK's incremental holds {r['allocated_bytes']} bytes, not the changed ones")
            if image_digest(sdk_dir / r["file"]) != want_inc:
                raise SystemExit("the SDK's incremental chain does not hold the disk's content")
            # nothing changed since: what each tool's backup costs beside moving data
            r0 = ovault_backup("unchanged", "incremental")
            r = sdk_backup("unchanged", "incremental", "--from-checkpoint-uuid", r["checkpoint"])
            if r0["mode"] != "incremental" or (r0["bytes_read"] or 0) > MiB or r["allocated_bytes"] > MiB:
                raise SystemExit(f"an incremental of an unchanged disk moved data: {r0} {r}")

            # restore: the first ovault full as a new disk, against an upload of the SDK's full
            job, r = ovault_job(o, f"/api/v1/backups/{ovault_full['backup_id']}/restore",
                                {"kind": "disks", "disk_ids": [disk_id]})
            new = floating_disk(sb, ovault_full["backup_id"])
            r.update(server_s=job_seconds(job), disk_id=new, content_ok=sb.digest(new) == want_full)
            line("restore", "ovault", r, f"disk {new}, content ok: {r['content_ok']}; "
                 f"states {r['machine_states_at_s']}")
            runs["restore_ovault"] = [r]
            stdout, r = sdk.run(o.proc.pid, "upload_disk.py", "--sd-name", "data", "--disk-format", "qcow2",
                                "--disk-sparse", "--enable-backup", sdk_dir / sdk_full["file"])
            new = next(x.split()[-1] for x in stdout.splitlines() if "Disk ID:" in x)
            r.update(disk_id=new, content_ok=sb.digest(new) == want_full)
            line("restore", "sdk", r, f"disk {new}, content ok: {r['content_ok']}")
            runs["restore_sdk"] = [r]
            if not (runs["restore_ovault"][0]["content_ok"] and r["content_ok"]):
                raise SystemExit("a restored disk does not hold the backed-up content")
            out["target_usage"] = next((t.get("usage") for t in o.api("GET", "/api/v1/targets")["items"]
                                        if t.get("usage")), None)
    finally:
        out["summary"] = summary(runs)
        res = Path("/var/tmp/ovault-bench")
        res.mkdir(parents=True, exist_ok=True)
        (res / "product_bench.json").write_text(json.dumps(out, indent=2))
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    for step, s in out["summary"].items():
        print(f"{step:<12} ovault {s['ovault_best_s']} s (median {s['ovault_median_s']}), "
              f"sdk {s['sdk_best_s']} s (median {s['sdk_median_s']}): ratio {s['ratio_best']} "
              f"(median {s['ratio_median']}, ovault's first {s['ratio_first']})" + ("" if s["goal"] is None else
                                                  f", goal <= {s['goal']}: {'met' if s['met'] else 'MISSED'}"))
    print("results: /var/tmp/ovault-bench/product_bench.json")
    return 0


GOALS = {"full": 0.45, "incremental": 0.6, "restore": 0.6, "unchanged": None}


def job_seconds(job: dict) -> float | None:
    from datetime import datetime
    a, b = job.get("created_at"), job.get("finished_at")
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 2) if a and b else None


def summary(runs: dict) -> dict:
    out = {}
    for step, goal in GOALS.items():
        ov, sd = runs.get(f"{step}_ovault", []), runs.get(f"{step}_sdk", [])
        if not ov or not sd:
            continue
        r = ratio(best(ov)["wall_s"], best(sd)["wall_s"])
        out[step] = {"ovault_best_s": best(ov)["wall_s"], "sdk_best_s": best(sd)["wall_s"],
                     "ovault_median_s": median_wall(ov), "sdk_median_s": median_wall(sd),
                     "ratio_best": r, "ratio_median": ratio(median_wall(ov), median_wall(sd)),
                     # ovault's first run of a step is the only one into a store without the data
                     "ratio_first": ratio(ov[0]["wall_s"], best(sd)["wall_s"]),
                     "goal": goal, "met": None if goal is None else r is not None and r <= goal}
    return out


if __name__ == "__main__":
    sys.exit(main())
