"""A policy on the sandbox, driven by a fast clock: `* * * * *` with keep_last 2 on
one VM. After four runs the VM has two backups, both give their disk back byte for
byte, the pruned backups' manifests are gone from the target, and gc frees the
chunks only they held.

The orchestrator (`ovault serve`, real runner, prune handlers) runs the jobs; the
test's own scheduler (same database, the real engine client) fires the ticks with
a clock it moves a minute at a time, so four runs take seconds, not minutes. The
orchestrator's own scheduler is made to sleep (huge pass interval)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers import Orchestrator, image_digest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def ovault(*args, timeout=300):
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"ovault {' '.join(map(str, args))}: {p.stdout}\n{p.stderr}"
    return p.stdout


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


async def test_every_minute_keep_last_two(sandbox, state_root, tmp_path):
    from imageio_ext.store import Store
    from orchestrator import config
    from orchestrator.catalog import Catalog, EmbeddedPostgres, connect
    from orchestrator.engine.client import EngineClient
    from orchestrator.policies.scheduler import Scheduler
    from orchestrator.policies.service import PolicyService

    pg = EmbeddedPostgres(state_root / "policies-pg")
    await pg.start()
    orch = engine = pool = None
    try:
        orch = await asyncio.to_thread(lambda: Orchestrator(
            sandbox.dir, state_root / "policies", dsn=pg.dsn,
            env={"OVAULT_POLICIES_SCHEDULER_INTERVAL": "100000",
                 "OVAULT_POLICIES_GC_SCHEDULE": ""}).start())
        vm = sandbox.vm("db-primary")
        pool = await connect(pg.dsn, min_size=1, max_size=4)
        catalog = Catalog(pool)
        cfg = config.load(sandbox=sandbox.dir)
        engine = EngineClient(cfg.engine)
        conn = sandbox.connect()
        try:
            atts = conn.system_service().vms_service().vm_service(vm["id"]) \
                .disk_attachments_service().list()
        finally:
            conn.close()
        disk_id = atts[0].disk.id
        # The service's own scheduler fires this policy at the next real minute unless
        # this test's clock (a minute ahead) has fired that minute first: at least 20 s
        # before a minute's end, so the test's first pass (after a write and a digest) wins.
        now = datetime.now(timezone.utc)
        if now.second >= 40:
            await asyncio.sleep(61 - now.second - now.microsecond / 1e6)
        p = await asyncio.to_thread(orch.api, "POST", "/api/v1/policies", {
            "name": "every-minute", "schedule": "* * * * *", "vm_ids": [vm["id"]],
            "retention": {"keep_last": 2}}, 201)
        clock = Clock(datetime.now(timezone.utc))
        sched = Scheduler(catalog, PolicyService(catalog, engine, clock=clock), replica="test",
                          clock=clock)
        digests = {}
        for run in range(4):
            # new data only this run's backup (and the next ones, until overwritten) holds
            sandbox.write(vm["id"], 4 * 2**20, 4 * 2**20, pattern="random", seed=1000 + run,
                          disk_id=disk_id)
            want = sandbox.digest(disk_id)
            clock.t += timedelta(minutes=1)
            ticks = await sched.pass_once()
            assert [t.status for t in ticks] == ["fired"], ticks
            job = await asyncio.to_thread(orch.wait_job, str(ticks[0].job_id), 300)
            assert job["state"] == "succeeded", job
            digests[job["machines"][0]["backup_id"]] = want
            await sched.pass_once()          # queues the run's prune job
            prunes = await pool.fetch("SELECT id FROM jobs WHERE kind = 'prune' AND "
                                      "state <> 'succeeded'")
            for r in prunes:
                pj = await asyncio.to_thread(orch.wait_job, str(r["id"]), 120)
                assert pj["state"] == "succeeded", pj
        ids = list(digests)
        kept = [b["id"] for b in await asyncio.to_thread(orch.backups, vm["id"])]
        assert sorted(kept) == sorted(ids[2:])
        for bid in ids[:2]:
            assert (await catalog.backups.get(uuid.UUID(bid))).status == "deleted"
        ticks = await catalog.policies.ticks(uuid.UUID(p["id"]))
        assert len(ticks) == 4 and all(t.status == "fired" for t in ticks)
        # the target holds the kept backups' manifests, not the pruned ones' (other
        # tests' orchestrators may have published more of this VM on this target)
        store = await Store.open(cfg.target.url)
        try:
            on_target = {b.backup_id for b in await store.list_backups(vm["id"])}
        finally:
            await store.close()
        assert set(ids[2:]) <= on_target and not set(ids[:2]) & on_target
        # both kept backups give the disk back byte for byte
        for bid in ids[2:]:
            out = tmp_path / f"{bid}.qcow2"
            await asyncio.to_thread(ovault, "export", bid, disk_id, out, "--sandbox", sandbox.dir,
                                    "--state-dir", orch.state_dir)
            assert image_digest(out) == digests[bid]
        # gc frees what only the pruned backups held
        r = json.loads(await asyncio.to_thread(
            ovault, "gc", "--grace-hours", "0", "--sandbox", sandbox.dir, "--state-dir",
            orch.state_dir, "--json"))
        assert r["chunks_removed"] >= 1 and r["bytes_removed"] > 0, r
        assert json.loads(await asyncio.to_thread(
            ovault, "verify", "--json", "--sandbox", sandbox.dir, "--state-dir", orch.state_dir))
    finally:
        if engine is not None:
            await engine.close()
        if pool is not None:
            await pool.close()
        if orch is not None:
            try:
                await asyncio.to_thread(orch.cancel_unfinished)
            finally:
                await asyncio.to_thread(orch.stop)
        await pg.stop()


def test_sigkill_during_a_delete_leaves_catalog_and_target_consistent(sandbox, state_root):
    """SIGKILL of `ovault serve` right after a DELETE (its prune job queued or
    running): never listed again, the restarted orchestrator finishes the job, and
    the catalog and the target agree."""
    import time

    from imageio_ext.store import Store
    from orchestrator import config

    vm = sandbox.vm("web-frontend")
    o = Orchestrator(sandbox.dir, state_root / "policies-kill").start()
    try:
        target = config.load(sandbox=sandbox.dir).target.url
        for delay in (0.0, 0.15):
            j = o.wait_job(o.backup([vm["id"]], "full")["id"])
            assert j["state"] == "succeeded", j
            bid = j["machines"][0]["backup_id"]
            d = o.api("DELETE", f"/api/v1/backups/{bid}", expect=202)
            time.sleep(delay)
            o.kill()
            o.start()
            assert bid not in [b["id"] for b in o.backups(vm["id"])]
            assert o.wait_job(d["job"]["id"], 120)["state"] == "succeeded"
            assert o.api("GET", f"/api/v1/backups/{bid}", expect=200)["status"] == "deleted"

            async def on_target():
                store = await Store.open(target)
                try:
                    return {b.backup_id for b in await store.list_backups(vm["id"])}
                finally:
                    await store.close()
            # the manifest is gone; every backup the catalog lists is on the target
            # (other tests' orchestrators may have published more on this target)
            listed = {b["id"] for b in o.backups(vm["id"])}
            found = asyncio.run(on_target())
            assert bid not in found and listed <= found
    finally:
        o.stop()


async def test_a_policy_writes_to_its_own_target_and_prunes_there(sandbox, state_root):
    """A policy naming another target: its runs publish there (not on the service's
    target), its retention decides on that target's backups only (a manual backup on
    the service's target stays), its prune removes manifests from that target, and a
    restore of one of its backups reads from that target."""
    from imageio_ext.store import Store
    from orchestrator import config
    from orchestrator.catalog import Catalog, EmbeddedPostgres, connect

    pg = EmbeddedPostgres(state_root / "policy-target-pg")
    await pg.start()
    import shutil
    orch = pool = None
    restored_id = None
    # inside the lab's target directory: the lab's movers accept stores under it
    # (their allowed_stores), as a site's movers must list every policy's target
    second = Path(sandbox.dir) / "target" / f"second-{uuid.uuid4().hex[:6]}"
    second.mkdir()
    try:
        orch = await asyncio.to_thread(lambda: Orchestrator(
            sandbox.dir, state_root / "policy-target", dsn=pg.dsn,
            env={"OVAULT_POLICIES_SCHEDULER_INTERVAL": "100000"}).start())
        pool = await connect(pg.dsn, min_size=1, max_size=2)
        catalog = Catalog(pool)
        vm = sandbox.vm("legacy-erp")
        main = await asyncio.to_thread(orch.wait_job, orch.backup([vm["id"]])["id"], 300)
        assert main["state"] == "succeeded", main
        b0 = main["machines"][0]["backup_id"]
        t2 = await asyncio.to_thread(orch.api, "POST", "/api/v1/targets", {
            "name": f"second-{uuid.uuid4().hex[:6]}", "url": str(second)}, 201)
        p = await asyncio.to_thread(orch.api, "POST", "/api/v1/policies", {
            "name": "to-second", "schedule": "0 3 * * *", "vm_ids": [vm["id"]],
            "retention": {"keep_last": 1}, "target_id": t2["id"]}, 201)
        assert p["target_id"] == t2["id"]
        runs = []
        for _ in range(2):
            job = (await asyncio.to_thread(orch.api, "POST", f"/api/v1/policies/{p['id']}/run",
                                           None, 202))["job"]
            assert job["request"]["target_id"] == t2["id"]
            job = await asyncio.to_thread(orch.wait_job, job["id"], 300)
            assert job["state"] == "succeeded", job
            runs.append(job["machines"][0]["backup_id"])
        for bid in runs:
            row = await catalog.backups.get(uuid.UUID(bid))
            assert str(row.target_id) == t2["id"], row
        assert str((await catalog.backups.get(uuid.UUID(b0))).target_id) != t2["id"]
        cfg = config.load(sandbox=sandbox.dir)

        async def manifests(url):
            s = await Store.open(url)
            try:
                return {b.backup_id for b in await s.list_backups(vm["id"])}
            finally:
                await s.close()
        assert set(runs) <= await manifests(str(second))
        assert not set(runs) & await manifests(cfg.target.url)
        # the policy's retention decides on its target's backups only
        preview = await asyncio.to_thread(orch.api, "GET", f"/api/v1/policies/{p['id']}/preview",
                                          None, 200)
        decided = {b["backup_id"]: b["action"] for v in preview["vms"] for b in v["backups"]}
        assert decided == {runs[1]: "keep", runs[0]: "prune"}, preview
        pj = (await asyncio.to_thread(orch.api, "POST", "/api/v1/prune", {"vm_id": vm["id"]},
                                      202))["job"]
        pj = await asyncio.to_thread(orch.wait_job, pj["id"], 120)
        assert pj["state"] == "succeeded" and pj["result"]["deleted"] == [runs[0]], pj
        assert (await catalog.backups.get(uuid.UUID(runs[0]))).status == "deleted"
        on_second = await manifests(str(second))
        assert runs[1] in on_second and runs[0] not in on_second
        assert b0 in await manifests(cfg.target.url)
        assert (await catalog.backups.get(uuid.UUID(b0))).status == "succeeded"
        # a restore of the kept backup reads it from the second target
        name = f"from-second-{uuid.uuid4().hex[:6]}"
        rj = await asyncio.to_thread(orch.restore, runs[1], kind="new", name=name)
        rj = await asyncio.to_thread(orch.wait_job, rj["id"], 300)
        assert rj["state"] == "succeeded", rj
        found = (await asyncio.to_thread(orch.api, "GET", f"/api/v1/vms?search=name%3D{name}",
                                          None, 200))["items"]
        assert [v["name"] for v in found] == [name]
        restored_id = found[0]["id"]
    finally:
        if restored_id:
            conn = sandbox.connect()
            try:
                conn.system_service().vms_service().vm_service(restored_id).remove()
            finally:
                conn.close()
        if pool is not None:
            await pool.close()
        if orch is not None:
            await asyncio.to_thread(orch.stop)
        await pg.stop()
        shutil.rmtree(second, ignore_errors=True)
