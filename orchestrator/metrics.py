"""Prometheus metrics, every one named `ovault_…`, in a registry per app.

Two kinds:
- this replica's own work (counters and histograms updated as things happen):
  HTTP requests, engine calls, bytes copied by the copies this replica drives,
  webhook attempts it made, websocket clients;
- cluster-wide state read from the catalog at scrape time (every replica
  reports the same values — aggregate them with `max`, not `sum`): jobs by
  state, job durations (a gauge histogram over the finished jobs the catalog
  holds now: rebuilt at every scrape, so it may shrink), and the target's usage
  and dedup ratio from `Store.stats()`, which walks the whole target and is
  therefore refreshed in the background at most every
  `api.stats_cache_seconds`, never on the scrape path; and the file system
  capacity of every target in use — the service's own and each policy's own —
  (`ovault_target_{capacity,used,free}_bytes{target}`: statvfs of a directory
  target, NFS FSSTAT of an nfs:// one), measured in the background at most every
  `CAPACITY_SECONDS`; a target that cannot be measured has no series.

Names follow Prometheus' conventions (tests/unit/test_metrics_names.py checks
them): the base unit last (`_seconds`, `_bytes`, `_ratio`), counters end in
`_total`, no rate gauges (throughput is `rate(ovault_moved_bytes_total[1m])`),
and what is rebuilt at scrape time is a gauge or a gauge histogram.
"""
from __future__ import annotations

import asyncio
import time

import structlog
from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, generate_latest)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

from .catalog import JobKind, JobState
from .policies.metrics import PolicyCollector

log = structlog.get_logger("ovault.metrics")

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _CatalogCollector:
    """Yields what `Metrics.refresh` last read from the catalog."""

    def __init__(self, m: "Metrics"):
        self.m = m

    def collect(self):
        jobs = GaugeMetricFamily("ovault_jobs", "Jobs in the catalog by kind and state",
                                 labels=["kind", "state"])
        # every (kind, state) series exists from the start, at 0 (no gaps in graphs)
        counts = {(k.value, s.value): 0 for k in JobKind for s in JobState}
        counts.update(self.m._jobs)
        for (kind, state), n in sorted(counts.items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        h = GaugeHistogramMetricFamily("ovault_job_duration_seconds",
                                       "Run time of the finished jobs in the catalog (started to finished)",
                                       labels=["kind", "state"])
        for (kind, state), (buckets, total, count) in sorted(self.m._durations.items()):
            h.add_metric([kind, state], buckets, total)
        yield h
        st = self.m._stats
        if st is not None:
            yield GaugeMetricFamily("ovault_target_stored_bytes", "Bytes of chunks stored on the target",
                                    value=st["stored_bytes"])
            yield GaugeMetricFamily("ovault_target_logical_bytes",
                                    "Non-zero bytes referenced by all published backups", value=st["logical_bytes"])
            yield GaugeMetricFamily("ovault_target_chunks", "Chunks on the target", value=st["chunks"])
            yield GaugeMetricFamily("ovault_target_backups", "Published backups on the target", value=st["backups"])
            yield GaugeMetricFamily("ovault_target_dedup_ratio",
                                    "Logical bytes referenced / bytes stored (compression and dedup)",
                                    value=st["dedup_ratio"])
            yield GaugeMetricFamily("ovault_target_stats_age_seconds", "Age of the target statistics",
                                    value=time.monotonic() - st["at"])
        fams = {k: GaugeMetricFamily(f"ovault_target_{k}_bytes", doc, labels=["target"]) for k, doc in (
            ("capacity", "Size of the target's file system"),
            ("used", "Bytes used on the target's file system (by anything)"),
            ("free", "Bytes free on the target's file system for ovault"))}
        for target, cap in sorted(self.m._capacity.items()):
            for k, f in fams.items():
                f.add_metric([target], cap[k])
        yield from fams.values()


CAPACITY_SECONDS = 30.0
CAPACITY_TIMEOUT = 30.0


class Metrics:
    def __init__(self, stats_cache_seconds: float = 300.0):
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter("ovault_http_requests_total", "HTTP requests answered",
                                     ["method", "route", "status"], registry=r)
        self.http_seconds = Histogram("ovault_http_request_seconds", "HTTP request latency",
                                      ["method", "route"], registry=r)
        self.engine_seconds = Histogram("ovault_engine_call_seconds", "oVirt engine call latency",
                                        ["operation"], registry=r)
        self.engine_errors = Counter("ovault_engine_call_errors_total", "oVirt engine calls that failed",
                                     ["operation", "kind"], registry=r)
        self.bytes_moved = Counter("ovault_moved_bytes_total", "Disk bytes copied by jobs on this replica",
                                   registry=r)
        self.webhook_attempts = Counter("ovault_webhook_delivery_attempts_total",
                                        "Webhook delivery attempts by outcome (delivered, retry, gave_up, "
                                        "unrecorded)", ["outcome"], registry=r)
        self.ws_clients = Gauge("ovault_websocket_clients", "Connected websocket clients", registry=r)
        self.ws_dropped_total = Counter("ovault_websocket_dropped_messages_total",
                                        "Messages not queued for slow websocket clients", registry=r)
        self.catalog_restarts = Counter("ovault_catalog_restarts_total",
                                        "Restarts of the embedded PostgreSQL after it died", registry=r)
        self.engine_releases = Counter("ovault_engine_releases_total",
                                       "Machines whose engine objects were released because the catalog "
                                       "stayed unreachable", registry=r)
        self.transfer_resumes = Counter("ovault_transfer_resumes_total",
                                        "Disk copies that went on on a new image transfer after the old "
                                        "one lost its imageio ticket or the engine paused, failed or "
                                        "dropped it, by job kind", ["kind"], registry=r)
        for kind in ("backup", "restore"):  # both series from the start, at 0
            self.transfer_resumes.labels(kind=kind)
        self.stats_errors = Counter("ovault_target_stats_errors_total", "Failed target statistics walks",
                                    registry=r)
        r.register(_CatalogCollector(self))
        self.policies = PolicyCollector()  # orchestrator/policies/metrics.py
        r.register(self.policies)
        self.stats_cache_seconds = stats_cache_seconds
        self._jobs: dict = {}
        self._durations: dict = {}
        self._stats: dict | None = None
        self._capacity: dict[str, dict[str, int]] = {}   # target name -> capacity/used/free
        self._capacity_at = float("-inf")
        self._capacity_task: asyncio.Task | None = None
        self._target_name: str | None = None
        self._stats_task: asyncio.Task | None = None
        self._last: dict[str, int] = {}

    # --- hooks ----------------------------------------------------------------------
    def engine_call(self, operation: str, seconds: float, error: str | None) -> None:
        """`EngineClient.observer`."""
        self.engine_seconds.labels(operation).observe(seconds)
        if error:
            self.engine_errors.labels(operation, error).inc()

    def progress(self, p: dict) -> None:
        """A progress sample of a machine this replica drives."""
        key = str(p.get("machine_id"))
        done = int(p.get("bytes_done") or 0)
        prev = self._last.get(key, 0)
        if done > prev:
            self.bytes_moved.inc(done - prev)
        self._last[key] = done
        if len(self._last) > 10_000:
            self._last.clear()

    def webhook_attempt(self, outcome: str) -> None:
        self.webhook_attempts.labels(outcome).inc()

    def ws_dropped(self) -> None:
        self.ws_dropped_total.inc()

    # --- scrape ------------------------------------------------------------------------
    async def refresh(self, catalog, store, stores=None) -> None:
        """Read the catalog's numbers; start a target walk when the last one is stale.
        ``stores``: ``async () -> [(target id, store)]``, every target in use (capacity)."""
        self._jobs = await catalog.jobs.count_by_state()
        await self.policies.refresh(catalog)
        self._durations = {
            key: ([(str(float(b)), n) for b, n in zip(DURATION_BUCKETS, counts)] + [("+Inf", total_n)],
                  total_s, total_n)
            for key, (counts, total_s, total_n) in
            (await catalog.jobs.duration_histogram(DURATION_BUCKETS)).items()}
        if self._target_name is None and store is not None and hasattr(catalog, "targets"):
            url = getattr(getattr(store, "target", None), "url", None)
            self._target_name = next((t.name for t in await catalog.targets.list() if t.url == url),
                                     None)
        self.kick(store)
        if time.monotonic() - self._capacity_at >= CAPACITY_SECONDS and \
                (self._capacity_task is None or self._capacity_task.done()):
            self._capacity_task = asyncio.create_task(self._measure(catalog, store, stores))

    def kick(self, store) -> None:
        """Start a target walk in the background when the last figures are stale."""
        stale = self._stats is None or time.monotonic() - self._stats["at"] > self.stats_cache_seconds
        if stale and store is not None and (self._stats_task is None or self._stats_task.done()):
            self._stats_task = asyncio.create_task(self._walk(store))

    async def _walk(self, store) -> None:
        try:
            s = await store.stats()
            self._stats = {"stored_bytes": s.stored_bytes, "logical_bytes": s.logical_bytes,
                           "chunks": s.chunks, "backups": s.backups,
                           "dedup_ratio": s.dedup_ratio,
                           "at": time.monotonic()}
        except Exception as e:
            self.stats_errors.inc()
            log.warning("target statistics failed", error=str(e))

    async def _named_targets(self, catalog, store, stores) -> list[tuple[str, object]]:
        main_url = getattr(getattr(store, "target", None), "url", None)
        out = [(self._target_name or str(main_url), store)] if store is not None else []
        if stores is not None:
            names = {t.id: t.name for t in await catalog.targets.list()}
            out += [(names.get(tid, str(tid)), st) for tid, st in await stores() if st is not store]
        return out

    async def _measure(self, catalog, store, stores) -> None:
        """Each target's file system size (Target.space: statvfs, NFS FSSTAT)."""
        cap: dict[str, dict[str, int]] = {}
        try:
            named = await self._named_targets(catalog, store, stores)
        except Exception as e:
            log.warning("target capacity: listing targets failed", error=str(e))
            named = [(self._target_name or "target", store)] if store is not None else []
        for name, st in named:
            space = getattr(getattr(st, "target", None), "space", None)
            if space is None:
                continue
            try:
                sp = await asyncio.wait_for(space(), CAPACITY_TIMEOUT)
            except Exception as e:   # an unreachable target has no series, the others do
                log.warning("target capacity unavailable", target=name, error=str(e))
                continue
            if sp is not None:
                cap[name] = {"capacity": sp.capacity, "used": sp.used, "free": sp.free}
        self._capacity, self._capacity_at = cap, time.monotonic()

    def stats(self) -> dict | None:
        return self._stats

    async def close(self) -> None:
        if self._capacity_task is not None:
            self._capacity_task.cancel()
            await asyncio.gather(self._capacity_task, return_exceptions=True)
        if self._stats_task is not None:
            self._stats_task.cancel()
            try:
                await self._stats_task
            except (asyncio.CancelledError, Exception):
                pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
