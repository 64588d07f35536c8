"""The targets' file system capacity gauges (Target.space: statvfs of a directory
target; the NFS target's FSSTAT is checked against the real server in
tests/integration/store) and the damaged-backups gauge, as a scrape shows them."""
from __future__ import annotations

import os
import uuid
from types import SimpleNamespace as NS

from imageio_ext.store.path_target import PathTarget
from imageio_ext.store.target import Space

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics import Metrics


class _Store:
    def __init__(self, root):
        self.target = PathTarget(root)
        self.target.url = str(root)

    async def stats(self):
        return NS(stored_bytes=1, logical_bytes=2, chunks=1, backups=1, dedup_ratio=2.0)


class _Policies:
    async def metrics_snapshot(self):
        return [], {}, {}

    async def damaged_count(self):
        return 3


class _Jobs:
    async def count_by_state(self):
        return {}

    async def duration_histogram(self, buckets):
        return {}


POLICY_TARGET = uuid.uuid4()
DOWN_TARGET = uuid.uuid4()


class _Targets:
    async def list(self):
        return [NS(id=POLICY_TARGET, name="other", url="/elsewhere"), NS(id=uuid.uuid4(), name="main", url=self.url),
                NS(id=DOWN_TARGET, name="down", url="nfs://gone/export")]


async def test_capacity_of_a_directory_target_and_damaged_count(tmp_path):
    m = Metrics(stats_cache_seconds=300)
    store = _Store(tmp_path)
    targets = _Targets()
    targets.url = str(tmp_path)
    await m.refresh(NS(jobs=_Jobs(), policies=_Policies(), targets=targets), store)
    await m._stats_task
    await m._capacity_task
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    st = os.statvfs(tmp_path)
    got = {k: {s.labels["target"]: s.value for s in fams[f"ovault_target_{k}_bytes"].samples}
           for k in ("capacity", "used", "free")}
    assert got["capacity"] == {"main": st.f_blocks * st.f_frsize}
    # used and free move with whatever else writes on the file system meanwhile
    assert abs(got["used"]["main"] - (st.f_blocks - st.f_bfree) * st.f_frsize) < 64 << 20
    assert abs(got["free"]["main"] - st.f_bavail * st.f_frsize) < 64 << 20
    assert 0 < got["free"]["main"] <= got["capacity"]["main"]
    assert fams["ovault_backups_damaged"].samples[0].value == 3


async def test_a_target_without_a_directory_has_no_capacity_series():
    m = Metrics(stats_cache_seconds=300)
    store = NS(target=NS(url="nfs://server/export"), stats=_Store("/").stats)
    await m.refresh(NS(jobs=_Jobs()), store)
    await m._stats_task
    await m._capacity_task
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert fams["ovault_target_capacity_bytes"].samples == []
    assert fams["ovault_target_stored_bytes"].samples[0].value == 1


async def test_every_target_in_use_has_its_capacity_and_an_unreachable_one_none(tmp_path):
    m = Metrics(stats_cache_seconds=300)
    (tmp_path / "main").mkdir()
    store = _Store(tmp_path / "main")
    targets = _Targets()
    targets.url = str(tmp_path / "main")

    class _Sized:
        async def space(self):
            return Space(capacity=10 << 30, used=4 << 30, free=5 << 30)

    class _Down:
        async def space(self):
            raise OSError("NFS server not responding")

    async def in_use():
        return [(None, store), (POLICY_TARGET, NS(target=_Sized())), (DOWN_TARGET, NS(target=_Down()))]

    await m.refresh(NS(jobs=_Jobs(), policies=_Policies(), targets=targets), store, in_use)
    await m._capacity_task
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    got = {k: {s.labels["target"]: s.value for s in fams[f"ovault_target_{k}_bytes"].samples}
           for k in ("capacity", "used", "free")}
    assert sorted(got["capacity"]) == ["main", "other"]          # "down" has no series
    assert (got["capacity"]["other"], got["used"]["other"], got["free"]["other"]) == (10 << 30, 4 << 30, 5 << 30)
    assert got["capacity"]["main"] == os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize
    await store.target.close()
