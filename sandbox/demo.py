"""`ovault demo`: the whole product on one machine, end to end.

Brings up the sandbox (engine simulator, hosts with real imageio daemons and
movers, NFS target) and the orchestrator, then through the REST API: full
backups of every sample VM, guest writes, incremental backups, a restore of
one VM as a new VM verified byte for byte against the source, and a short
report. It then stays up (API reachable) until interrupted, or stops at once
with `--exit`.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import time
from pathlib import Path

import aiohttp

from orchestrator.config import Config, apply_sandbox
from orchestrator.service import create_app, tls_context

MARKER = ".ovault-demo"
MiB = 1 << 20


def say(msg: str = ""):
    print(msg, flush=True)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def run(args) -> int:
    try:
        return asyncio.run(_demo(Path(args.dir).resolve(), args.exit))
    except KeyboardInterrupt:
        return 130


async def _demo(d: Path, exit_now: bool) -> int:
    from .lab import Lab, LabConfig
    if d.exists():
        if not (d / MARKER).exists() and any(d.iterdir()):
            say(f"ovault demo: {d} exists and is not a demo directory; choose another --dir")
            return 2
        shutil.rmtree(d)  # every demo starts from a clean lab
    d.mkdir(parents=True)
    (d / MARKER).write_text("created by ovault demo\n")
    t0 = time.monotonic()
    say("== ovault demo ==")
    lab = Lab(LabConfig(d / "sandbox", hosts=2, vms=3))
    runner = None
    try:
        try:
            info = await lab.start()
        except Exception as e:
            say(f"ovault demo: the sandbox could not start: {e}")
            return 1
        say(f"sandbox up in {time.monotonic() - t0:.1f}s: engine {info['engine']['api']}, "
            f"{len(info['hosts'])} hosts, {len(info['vms'])} VMs, target {info['target']['nfs_url']}")
        cfg = Config()
        cfg.state_dir = str(d / "ovault")
        apply_sandbox(cfg, d / "sandbox")
        cfg.listen.port = 0
        app = create_app(cfg)
        from aiohttp import web
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            await runner.setup()
        except Exception as e:
            say(f"ovault demo: the orchestrator could not start: {e}")
            return 1
        ctx = tls_context(cfg)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = runner.addresses[0][1]
        url = f"https://127.0.0.1:{port}"
        token = (d / "ovault" / "admin.token").read_text().strip()
        (d / "ovault" / "client.json").write_text(json.dumps(
            {"url": url, "ca_file": str(d / "ovault" / "tls" / "cert.pem"),
             "token_file": str(d / "ovault" / "admin.token")}, indent=2))
        say(f"orchestrator up: {url} (state in {d / 'ovault'})")
        api = DemoApi(url, token, str(d / "ovault" / "tls" / "cert.pem"))
        async with api:
            ok = await _scenario(api, lab, info)
        say(f"\ndemo finished in {time.monotonic() - t0:.1f}s: {'ALL CHECKS PASSED' if ok else 'FAILURES above'}")
        if not exit_now:
            say(f"\nThe orchestrator stays up: {url}")
            say(f"  ovault jobs --state-dir {d / 'ovault'}")
            say(f"  ovault backups --state-dir {d / 'ovault'}")
            say("Press Ctrl-C to stop.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0 if ok else 1
    finally:
        if runner is not None:
            await runner.cleanup()
        await lab.stop()


class DemoApi:
    def __init__(self, url, token, ca):
        self.url, self.token, self.ca = url, token, ca

    async def __aenter__(self):
        self.s = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"},
                                       connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=self.ca)))
        return self

    async def __aexit__(self, *e):
        await self.s.close()

    async def call(self, method, path, body=None):
        async with self.s.request(method, self.url + path, json=body) as r:
            doc = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {doc}")
            return doc

    async def run_job(self, method, path, body, label):
        job = (await self.call(method, path, body))["job"]
        shown = {}
        while job["state"] not in ("succeeded", "failed", "canceled"):
            await asyncio.sleep(0.5)
            job = await self.call("GET", f"/api/v1/jobs/{job['id']}")
            for m in job["machines"]:
                key = (m["id"], m["state"])
                if key not in shown:
                    shown[key] = True
                    say(f"   {label}: {m.get('vm_name') or m['vm_id']:<14} {m['state']}")
        say(f"   job {job['id']} {job['state']}" + (f": {job['error']}" if job.get("error") else ""))
        return job


async def _scenario(api: DemoApi, lab, info) -> bool:
    admin = lab.engine
    vms = {v["name"]: v["id"] for v in info["vms"]}
    ok = True
    say("\n-- 1. full backup of every VM (CBT where disks allow it, snapshots otherwise)")
    t = time.monotonic()
    j1 = await api.run_job("POST", "/api/v1/backups", {"vm_ids": list(vms.values()), "mode": "auto"}, "full")
    t_full = time.monotonic() - t
    ok &= j1["state"] == "succeeded"

    say("\n-- 2. guests write: 16 MiB of random data and 4 MiB of a repeated byte on each VM's boot disk")
    for name, vm_id in vms.items():
        vm = admin.vms[vm_id]
        disk = next(a.disk_id for a in vm.attachments if a.bootable)
        await admin.disks[disk].image.write(300 * MiB, 16 * MiB, "random", seed=len(name))
        await admin.disks[disk].image.write(400 * MiB, 4 * MiB, 0x5A)
    digests = {}
    for name, vm_id in vms.items():
        for a in admin.vms[vm_id].attachments:
            digests[(name, a.disk_id)] = (await admin.disks[a.disk_id].image.digest())["sha256"]

    say("\n-- 3. incremental backup of every VM")
    t = time.monotonic()
    j2 = await api.run_job("POST", "/api/v1/backups", {"vm_ids": list(vms.values()), "mode": "auto"}, "incr")
    t_inc = time.monotonic() - t
    ok &= j2["state"] == "succeeded"

    backups = (await api.call("GET", "/api/v1/backups?limit=50"))["items"]
    say("\n-- 4. backups in the catalog")
    say(f"   {'VM':<14} {'mode':<12} {'method':<9} {'virtual':>10} {'read':>10} {'new on target':>14}")
    for b in sorted(backups, key=lambda b: (b["vm_name"], b["created_at"])):
        read = sum(d["bytes_read"] for d in b["disks"])
        say(f"   {b['vm_name']:<14} {b['mode']:<12} {b['method']:<9} {human(b['size_bytes']):>10} "
            f"{human(read):>10} {human(b['new_bytes']):>14}")

    say("\n-- 5. restore db-primary's latest backup as a new VM, then verify it byte for byte")
    latest = next(b for b in backups if b["vm_name"] == "db-primary" and b["mode"] == "incremental")
    t = time.monotonic()
    j3 = await api.run_job("POST", f"/api/v1/backups/{latest['id']}/restore",
                           {"kind": "new", "name": "db-primary-restored"}, "restore")
    t_res = time.monotonic() - t
    ok &= j3["state"] == "succeeded"
    new_vm = next((v for v in admin.vms.values() if v.name == "db-primary-restored"), None)
    src_vm = admin.vms[vms["db-primary"]]
    if new_vm is None:
        say("   FAIL: the restored VM is not in the engine")
        return False
    src = {(a.bootable, a.interface): a.disk_id for a in src_vm.attachments}
    for a in new_vm.attachments:
        want = digests[("db-primary", src[(a.bootable, a.interface)])]
        got = (await admin.disks[a.disk_id].image.digest())["sha256"]
        same = want == got
        ok &= same
        say(f"   disk {admin.disks[a.disk_id].alias:<18} sha256 {got[:16]}… "
            f"{'== source at backup time' if same else '!= source: MISMATCH'}")
    cfg_same = (new_vm.memory, new_vm.cpu_sockets, new_vm.cpu_cores, new_vm.bios_type, len(new_vm.nics)) == \
        (src_vm.memory, src_vm.cpu_sockets, src_vm.cpu_cores, src_vm.bios_type, len(src_vm.nics))
    ok &= cfg_same
    say(f"   configuration (memory, CPU, BIOS, NICs) {'matches' if cfg_same else 'DIFFERS'}")

    left = {"snapshots": sum(len(v.snapshots) for v in admin.vms.values()),
            "active transfers": sum(1 for t_ in admin.transfers.values() if not t_.phase.startswith("finished")),
            "locked disks": sum(1 for x in admin.disks.values() if x.status != "ok")}
    clean = not any(left.values())
    ok &= clean
    say(f"   engine leftovers: {'none' if clean else left}")

    from imageio_ext.store import Store
    store = await Store.open(info["target"]["nfs_url"])
    try:
        st = await store.stats()
    finally:
        await store.close()
    say("\n-- 6. report")
    say(f"   full backup of 3 VMs:        {t_full:5.1f}s")
    say(f"   incremental of 3 VMs:        {t_inc:5.1f}s")
    say(f"   restore as new VM:           {t_res:5.1f}s")
    say(f"   target: {st.chunks} chunks, {human(st.stored_bytes)} stored for {human(st.logical_bytes)} "
        f"of backed-up disk data (dedup+compression {st.dedup_ratio:.1f}x)")
    return ok
