"""Client commands of the `ovault` CLI: they talk to `ovault serve` over REST."""
from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from pathlib import Path

import aiohttp

from .cli import CliError

TERMINAL = ("succeeded", "failed", "canceled")


class Api:
    def __init__(self, args):
        url, token, ca = args.server, args.token, args.ca_file
        state = args.state_dir or (str(Path(args.sandbox) / "ovault") if args.sandbox else None)
        if state is None and not url:
            state = os.environ.get("OVAULT_STATE_DIR", "/var/lib/ovault")
        if state and (not url or not token):
            cj = Path(state) / "client.json"
            if not cj.exists():
                raise CliError(f"no running orchestrator found ({cj} is missing); start "
                               "`ovault serve` or pass --server and --token")
            info = json.loads(cj.read_text())
            url = url or info["url"]
            ca = ca or info.get("ca_file")
            if not token and info.get("token_file") and Path(info["token_file"]).exists():
                token = Path(info["token_file"]).read_text().strip()
        if not url or not token:
            raise CliError("need --server and --token (or OVAULT_SERVER and OVAULT_TOKEN)")
        self.url, self.token = url.rstrip("/"), token
        self.ssl = ssl.create_default_context(cafile=ca) if ca else None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            connector=aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else None,
            timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    async def req(self, method, path, body=None, params=None):
        try:
            async with self.session.request(method, self.url + path, json=body, params=params) as r:
                text = await r.text()
                doc = json.loads(text) if text else None
                if r.status >= 400:
                    detail = doc.get("detail") if isinstance(doc, dict) else text
                    raise CliError(f"{method} {path}: {r.status} {detail}")
                return doc
        except aiohttp.ClientError as e:
            raise CliError(f"cannot reach {self.url}: {e}") from None

    async def resolve_vms(self, names_or_ids):
        vms = (await self.req("GET", "/api/v1/vms"))["items"]
        by_name = {v["name"]: v["id"] for v in vms}
        ids = {v["id"] for v in vms}
        out = []
        for x in names_or_ids:
            if x in ids:
                out.append(x)
            elif x in by_name:
                out.append(by_name[x])
            else:
                raise CliError(f"no VM named or numbered {x!r}")
        return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


class Progress:
    """One line per VM, redrawn in place on a terminal; state changes otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.lines = 0
        self.last: dict = {}
        self.samples: dict = {}

    def draw(self, job: dict):
        rows = []
        for m in job["machines"]:
            key = m["id"]
            now = time.monotonic()
            prev = self.samples.get(key)
            rate = 0.0
            if prev and now > prev[0]:
                rate = max(0.0, (m["bytes_done"] - prev[1]) / (now - prev[0]))
            self.samples[key] = (now, m["bytes_done"])
            frac = m.get("progress") or 0.0
            bar = "#" * int(frac * 30)
            eta = ""
            if rate > 0 and m["bytes_total"]:
                eta = f" ETA {int((m['bytes_total'] - m['bytes_done']) / rate)}s"
            name = (m.get("vm_name") or m["vm_id"])[:20]
            rows.append(f"{name:<20} {m['state']:<9} [{bar:<30}] {frac * 100:5.1f}% "
                        f"{human(m['bytes_done'])}/{human(m['bytes_total'])} "
                        f"{human(rate)}/s{eta}" + (f"  {m['error']}" if m.get("error") else ""))
        if self.tty:
            if self.lines:
                self.stream.write(f"\x1b[{self.lines}F")
            for r in rows:
                self.stream.write("\x1b[2K" + r + "\n")
            self.lines = len(rows)
        else:
            for m, r in zip(job["machines"], rows):
                if self.last.get(m["id"]) != m["state"]:
                    self.stream.write(r + "\n")
                    self.last[m["id"]] = m["state"]
        self.stream.flush()


async def wait_job(api: Api, job_id: str, quiet: bool) -> dict:
    bar = None if quiet else Progress()
    while True:
        job = await api.req("GET", f"/api/v1/jobs/{job_id}")
        if bar:
            bar.draw(job)
        if job["state"] in TERMINAL:
            return job
        await asyncio.sleep(0.5)


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
        elif args.cmd == "backups":
            params = {"limit": str(args.limit)}
            if args.vm:
                params["vm_id"] = (await api.resolve_vms([args.vm]))[0]
            items = (await api.req("GET", "/api/v1/backups", params=params))["items"]
            if args.json:
                print(json.dumps(items, indent=2))
            else:
                print(f"{'ID':<36}  {'VM':<18} {'CREATED':<25} {'MODE':<11} {'METHOD':<8} "
                      f"{'STATUS':<9} {'SIZE':>10} {'NEW':>10}")
                for b in items:
                    print(f"{b['id']:<36}  {(b['vm_name'] or b['vm_id'])[:18]:<18} "
                          f"{b['created_at'][:25]:<25} {b['mode']:<11} {b['method']:<8} "
                          f"{b['status']:<9} {human(b['size_bytes']):>10} {human(b['new_bytes']):>10}")
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
