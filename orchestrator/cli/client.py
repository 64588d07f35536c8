"""Client commands: `backup`, `restore`, `backups`, `jobs`, `cancel`.

They talk to a running `ovault serve` over its REST API (`api.Api`). Human
output by default, ``--json`` for scripts, progress while waiting (``--wait``).
"""
from __future__ import annotations

import asyncio
import json

from .api import Api
from .common import CliError, add_client_options, human
from .progress import JobProgress

TERMINAL = ("succeeded", "failed", "canceled")


def register(sub) -> None:
    bk = sub.add_parser("backup", help="back up VMs (names or ids)")
    bk.add_argument("vms", nargs="+")
    bk.add_argument("--mode", choices=("auto", "full", "incremental"), default="auto")
    bk.add_argument("--wait", action="store_true", help="wait for the job, with progress")
    rs = sub.add_parser("restore", help="restore a backup")
    rs.add_argument("backup")
    rs.add_argument("--name", help="name of the new VM (kind new)")
    rs.add_argument("--kind", choices=("new", "in_place", "disks"), default="new")
    rs.add_argument("--disk", action="append", dest="disk_ids", help="disk id (repeatable)")
    rs.add_argument("--cluster", dest="cluster_id")
    rs.add_argument("--storage-domain", dest="storage_domain_id")
    rs.add_argument("--target-vm", dest="target_vm_id")
    rs.add_argument("--power-on", action="store_true")
    rs.add_argument("--wait", action="store_true", help="wait for the job, with progress")
    bl = sub.add_parser("backups", help="list backups, or show one")
    bl.add_argument("backup", nargs="?", help="a backup id: show that backup")
    bl.add_argument("--vm", help="VM name or id")
    bl.add_argument("--limit", type=int, default=50)
    jl = sub.add_parser("jobs", help="list jobs, or show one")
    jl.add_argument("job", nargs="?")
    jl.add_argument("--limit", type=int, default=20)
    cn = sub.add_parser("cancel", help="cancel a job")
    cn.add_argument("job")
    for p in (bk, rs, bl, jl, cn):
        add_client_options(p)
        p.set_defaults(func=lambda args: asyncio.run(run(args)))


async def wait_job(api: Api, job_id: str, quiet: bool) -> dict:
    """Poll the job until it ends, with a bar per VM unless ``quiet``."""
    if quiet:
        return await _poll(api, job_id, None)
    with JobProgress() as bars:
        return await _poll(api, job_id, bars)


async def _poll(api: Api, job_id: str, bars: JobProgress | None) -> dict:
    while True:
        job = await api.req("GET", f"/api/v1/jobs/{job_id}")
        if bars is not None:
            bars.draw(job)
        if job["state"] in TERMINAL:
            return job
        await asyncio.sleep(0.5)


CONSISTENCY = {"filesystem": "filesystem (the guest's file systems were frozen)",
               "crash": "crash (the guest was not frozen)"}


def format_backup(b: dict) -> str:
    """One backup, as `ovault backups ID` prints it."""
    rows = [("backup", b["id"]), ("vm", f"{b.get('vm_name') or ''} ({b['vm_id']})".strip()),
            ("created", b.get("created_at")), ("completed", b.get("completed_at")),
            ("status", b["status"] + ("  DAMAGED (ovault verify shows where)" if b.get("damaged") else "")),
            ("mode", b["mode"]), ("method", b["method"]),
            ("consistency", CONSISTENCY.get(b.get("consistency"), b.get("consistency") or "-")),
            ("parent", b.get("parent_id")), ("checkpoint", b.get("checkpoint_id")),
            ("size", human(b.get("size_bytes") or 0)), ("new data", human(b.get("new_bytes") or 0)),
            ("protected", "yes" if b.get("protected") else "no"),
            ("fallback", b.get("fallback_reason")), ("error", b.get("error"))]
    out = [f"{k + ':':<13}{v}" for k, v in rows if v not in (None, "")]
    for d in b.get("disks") or []:
        out.append(f"{'disk:':<13}{d.get('alias') or d['disk_id']} {d['disk_id']} "
                   f"{human(d.get('provisioned_size') or 0)} {d.get('format')}, read "
                   f"{human(d.get('bytes_read') or 0)}, new {human(d.get('bytes_written') or 0)}")
    return "\n".join(out)


def print_job(job: dict):
    print(f"job {job['id']} ({job['kind']}): {job['state']}" +
          (f" - {job['error']}" if job.get("error") else ""))
    for m in job["machines"]:
        extra = f" backup {m['backup_id']}" if m.get("backup_id") and job["kind"] == "backup" else ""
        print(f"  {m.get('vm_name') or m['vm_id']}: {m['state']}{extra}" +
              (f" - {m['error']}" if m.get("error") else ""))


async def run(args) -> int:
    async with Api(args) as api:
        if args.cmd == "backup":
            ids = await api.resolve_vms(args.vms)
            job = (await api.req("POST", "/api/v1/backups", {"vm_ids": ids, "mode": args.mode}))["job"]
        elif args.cmd == "restore":
            body = {k: getattr(args, k) for k in ("kind", "name", "disk_ids", "cluster_id",
                                                  "storage_domain_id", "target_vm_id")
                    if getattr(args, k)}
            body["power_on"] = args.power_on
            job = (await api.req("POST", f"/api/v1/backups/{args.backup}/restore", body))["job"]
        elif args.cmd == "backups" and args.backup:
            b = await api.req("GET", f"/api/v1/backups/{args.backup}")
            print(json.dumps(b, indent=2)) if args.json else print(format_backup(b))
            return 0
        elif args.cmd == "backups":
            params = {"limit": str(args.limit)}
            if args.vm:
                params["vm_id"] = (await api.resolve_vms([args.vm]))[0]
            items = (await api.req("GET", "/api/v1/backups", params=params))["items"]
            if args.json:
                print(json.dumps(items, indent=2))
            else:
                print(f"{'ID':<36}  {'VM':<18} {'CREATED':<25} {'MODE':<11} {'METHOD':<8} "
                      f"{'STATUS':<9} {'CONSISTENCY':<11} {'SIZE':>10} {'NEW':>10}")
                for b in items:
                    print(f"{b['id']:<36}  {(b['vm_name'] or b['vm_id'])[:18]:<18} "
                          f"{b['created_at'][:25]:<25} {b['mode']:<11} {b['method']:<8} "
                          f"{b['status']:<9} {b.get('consistency') or '-':<11} "
                          f"{human(b['size_bytes']):>10} {human(b['new_bytes']):>10}"
                          + ("  DAMAGED (ovault verify shows where)" if b.get("damaged") else ""))
            return 0
        elif args.cmd == "jobs":
            if args.job:
                job = await api.req("GET", f"/api/v1/jobs/{args.job}")
                print(json.dumps(job, indent=2)) if args.json else print_job(job)
                return 0
            items = (await api.req("GET", "/api/v1/jobs", params={"limit": str(args.limit)}))["items"]
            if args.json:
                print(json.dumps(items, indent=2))
            else:
                for j in items:
                    vms = ", ".join(m.get("vm_name") or m["vm_id"] for m in j["machines"])
                    print(f"{j['id']}  {j['kind']:<8} {j['state']:<10} {j['created_at'][:19]}  {vms}")
            return 0
        elif args.cmd == "cancel":
            job = await api.req("POST", f"/api/v1/jobs/{args.job}/cancel")
            print(json.dumps(job)) if args.json else print(f"cancel requested for job {job['id']}")
            return 0
        else:
            raise CliError(f"unknown command {args.cmd}")
        if getattr(args, "wait", False):
            job = await wait_job(api, job["id"], quiet=args.json)
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            print_job(job)
        return 0 if job["state"] in ("succeeded", "queued", "running") else 1
