"""Every metric ovault exposes follows Prometheus' naming conventions, checked
on a registry holding every family (including the ones rebuilt at scrape time)
and on the text the scrape endpoint sends."""
from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace as NS

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics import DURATION_BUCKETS, Metrics

UNITS = ("seconds", "bytes", "ratio")
NAME = re.compile(r"^ovault_[a-z][a-z0-9_]*[a-z0-9]$")


class _Jobs:
    async def count_by_state(self):
        return {("backup", "succeeded"): 3, ("restore", "failed"): 1}

    async def duration_histogram(self, buckets):
        counts = [0, 1, 2] + [3] * (len(buckets) - 3)
        return {("backup", "succeeded"): (counts, 250.0, 3)}


class _Store:
    async def stats(self):
        return NS(stored_bytes=10, logical_bytes=30, chunks=2, backups=3, dedup_ratio=3.0)


async def _full_registry() -> Metrics:
    m = Metrics(stats_cache_seconds=300)
    # one sample in every labelled family, so each one is exposed
    m.http_requests.labels("GET", "/x", "200").inc()
    m.http_seconds.labels("GET", "/x").observe(0.1)
    m.engine_call("vms.list", 0.2, "timeout")
    m.progress({"machine_id": "m1", "bytes_done": 100})
    m.webhook_attempt("retry")
    m.ws_dropped()
    m.catalog_restarts.inc()
    m.stats_errors.inc()
    await m.refresh(NS(jobs=_Jobs()), _Store())
    await asyncio.wait_for(m._stats_task, 5)  # the background target walk
    return m


def _families(m: Metrics) -> dict:
    return {f.name: f for f in m.registry.collect()}


async def test_names_units_and_types():
    m = await _full_registry()
    fams = _families(m)
    assert {"ovault_jobs", "ovault_job_duration_seconds", "ovault_moved_bytes", "ovault_target_stored_bytes",
            "ovault_target_dedup_ratio", "ovault_http_requests"} <= set(fams)
    for name, f in fams.items():
        assert NAME.match(name), name
        words = name.split("_")
        # a base unit appears once, as the last word (before a counter's _total)
        for unit in UNITS:
            if unit in words:
                assert words[-1] == unit, f"{name}: the unit {unit!r} is not last"
        assert not any(w in ("milliseconds", "kilobytes", "megabytes", "percent") for w in words), name
        assert "per_second" not in name and "rate" not in words and "throughput" not in words, \
            f"{name}: a rate is computed by PromQL from a counter, not exposed as a gauge"
        if f.type == "counter":
            assert all(s.name in (name + "_total", name + "_created") for s in f.samples), name
        else:
            assert not name.endswith("_total"), f"{name}: only counters end in _total"


async def test_scrape_time_families_are_gauges_or_gauge_histograms():
    """A family rebuilt from the catalog at every scrape can go down (jobs are
    pruned), so it must not claim to be a counter or a cumulative histogram."""
    m = await _full_registry()
    catalog_families = [f for c in list(m.registry._collector_to_names) if type(c).__name__ == "_CatalogCollector"
                        for f in c.collect()]
    assert {f.name for f in catalog_families} >= {"ovault_jobs", "ovault_job_duration_seconds",
                                                  "ovault_target_stored_bytes"}
    for f in catalog_families:
        assert f.type in ("gauge", "gaugehistogram"), (f.name, f.type)
    h = _families(m)["ovault_job_duration_seconds"]
    assert h.type == "gaugehistogram"
    buckets = [(s.labels["le"], s.value) for s in h.samples if s.name.endswith("_bucket")]
    assert buckets[0] == (str(float(DURATION_BUCKETS[0])), 0) and buckets[-1] == ("+Inf", 3)
    assert {s.name: s.value for s in h.samples if not s.name.endswith("_bucket")} == \
        {"ovault_job_duration_seconds_gcount": 3, "ovault_job_duration_seconds_gsum": 250.0}


async def test_the_scrape_text_parses_and_carries_the_documented_names():
    m = await _full_registry()
    text = m.render().decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {s.name for f in parsed.values() for s in f.samples}
    for name in ("ovault_moved_bytes_total", "ovault_http_requests_total", "ovault_engine_call_errors_total",
                 "ovault_webhook_delivery_attempts_total", "ovault_websocket_dropped_messages_total",
                 "ovault_catalog_restarts_total", "ovault_target_stats_errors_total", "ovault_jobs",
                 "ovault_job_duration_seconds_bucket", "ovault_target_stored_bytes", "ovault_target_dedup_ratio",
                 "ovault_websocket_clients"):
        assert name in samples, name
    assert not any("throughput" in s or "per_second" in s for s in samples)
    assert 'ovault_jobs{kind="backup",state="succeeded"} 3.0' in text
    assert "ovault_moved_bytes_total 100.0" in text


def test_the_docs_list_exactly_the_exposed_families():
    """docs/api.md's metrics table names every family, and no other."""
    import pathlib
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(ovault_[a-z0-9_]+)", section))
    # `ovault_target_stored_bytes` · `_logical_bytes` ... : suffixes of the first name's family
    for prefix, rest in re.findall(r"`(ovault_target)_[a-z_]+`((?: · `_[a-z_]+`)+)", section):
        named |= {prefix + s for s in re.findall(r"`(_[a-z_]+)`", rest)}
    m = asyncio.run(_full_registry())
    exposed = set()
    for f in m.registry.collect():
        exposed.add(f.name + "_total" if f.type == "counter" else f.name)
    assert named == exposed
