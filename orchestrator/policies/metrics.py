"""Policy metrics, read from the catalog at each scrape (cluster scope: the same on
every replica; aggregate with `max`):

- `ovault_vm_last_success_timestamp_seconds{vm_id,vm,policy}`: per member VM, when
  its newest successful backup was taken (0: never);
- `ovault_vm_protection{status}`: VMs per protection status (docs/policies.md);
- `ovault_policy_runs_total{policy,result}`: policy jobs that ended, by state;
- `ovault_backups_damaged`: backups verify found damaged (not deleted).

Membership and status come from the `vm_protection` table the maintenance pass
keeps current, so a scrape never asks the engine.
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["PolicyCollector", "STATUSES"]

STATUSES = ("protected", "at_risk", "unprotected", "excluded")
RESULTS = ("succeeded", "failed", "canceled")


class PolicyCollector:
    def __init__(self):
        self._last: list[tuple[str, str, str, float]] = []
        self._status: dict[str, int] = {}
        self._runs: dict[tuple[str, str], int] = {}
        self._damaged = 0

    async def refresh(self, catalog) -> None:
        repo = getattr(catalog, "policies", None)
        if repo is None:      # a catalog without policies (unit fakes): empty families
            return
        last, self._status, self._runs = await repo.metrics_snapshot()
        self._damaged = await repo.damaged_count()
        self._last = [(vm_id, vm or "", policy, at.timestamp() if at else 0.0)
                      for vm_id, vm, policy, at in last]

    def collect(self):
        last = GaugeMetricFamily("ovault_vm_last_success_timestamp_seconds",
                                 "When a policy member VM's newest successful backup was taken "
                                 "(Unix time; 0: never)", labels=["vm_id", "vm", "policy"])
        for vm_id, vm, policy, at in self._last:
            last.add_metric([vm_id, vm, policy], at)
        yield last
        prot = GaugeMetricFamily("ovault_vm_protection", "VMs by protection status",
                                 labels=["status"])
        for s in STATUSES:
            prot.add_metric([s], self._status.get(s, 0))
        yield prot
        runs = CounterMetricFamily("ovault_policy_runs", "Policy runs that ended, by result",
                                   labels=["policy", "result"])
        for (policy, result), n in sorted(self._runs.items()):
            runs.add_metric([policy, result], n)
        yield runs
        yield GaugeMetricFamily("ovault_backups_damaged",
                                "Backups verify found damaged on the target (not deleted)",
                                value=self._damaged)
