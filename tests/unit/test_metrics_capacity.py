"""The target's file system capacity gauges (statvfs of a directory target) and the
damaged-backups gauge, as a scrape shows them."""
from __future__ import annotations

import os
from types import SimpleNamespace as NS

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics import Metrics


class _Store:
    def __init__(self, root):
        self.target = NS(root=root, url=str(root))

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


class _Targets:
    async def list(self):
        return [NS(name="other", url="/elsewhere"), NS(name="main", url=self.url)]


async def test_capacity_of_a_directory_target_and_damaged_count(tmp_path):
    m = Metrics(stats_cache_seconds=300)
    store = _Store(tmp_path)
    targets = _Targets()
    targets.url = str(tmp_path)
    await m.refresh(NS(jobs=_Jobs(), policies=_Policies(), targets=targets), store)
    await m._stats_task
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
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert fams["ovault_target_capacity_bytes"].samples == []
    assert fams["ovault_target_stored_bytes"].samples[0].value == 1
