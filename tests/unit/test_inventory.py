"""orchestrator/inventory: the VM inventory follows the engine's event log, relists
on gaps, unknown-VM events, errors and every reconcile period, and tells its
listeners what changed (a fake engine; the sandbox test is in
tests/e2e/test_policies_sandbox.py)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace as NS

import pytest

from orchestrator.inventory import Inventory
from orchestrator.inventory.wiring import attach


def vm(i, name=None, cluster="c1", tags=()):
    return NS(id=i, name=name or f"vm-{i}", cluster=NS(id=cluster), tags=[NS(name=t) for t in tags],
              status="up", host=None, memory=1)


class FakeEngine:
    def __init__(self, vms):
        self.vms = {v.id: v for v in vms}
        self.events: list = []
        self.lists = 0       # full listings
        self.reads = 0       # one-VM listings
        self.fail = False

    def log(self, code, vm_id=None, origin="oVirt"):
        idx = (self.events[-1].index if self.events else 0) + 1
        self.events.append(NS(index=idx, code=code, vm=NS(id=vm_id) if vm_id else None,
                              origin=origin))

    async def events_since(self, index, max_=200):
        if self.fail:
            raise ConnectionError("engine down")
        if index is None:
            return list(reversed(self.events))[:1]
        return [e for e in self.events if e.index > index][:max_]

    async def list_vms_with_tags(self, search=None):
        if self.fail:
            raise ConnectionError("engine down")
        if search is None:
            self.lists += 1
            return list(self.vms.values())
        self.reads += 1
        vid = search.split("=", 1)[1]
        return [v for v in self.vms.values() if v.id == vid]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def setup():
    eng = FakeEngine([vm("a"), vm("b", tags=("prod",))])
    eng.log(1)
    clock = Clock()
    inv = Inventory(eng, interval=0, reconcile_seconds=300, min_resync_seconds=30, clock=clock)
    changes = []
    inv.listeners.append(changes.append)
    return eng, inv, clock, changes


def ids(inv):
    return sorted(v.id for v in inv.vms())


async def test_first_poll_lists_everything_then_follows_events(setup):
    eng, inv, clock, changes = setup
    assert not inv.fresh()
    await inv.poll_once()
    assert inv.fresh() and ids(inv) == ["a", "b"] and eng.lists == 1 and inv.last_index == 1
    assert changes[-1].vm_ids == {"a", "b"} and changes[-1].full
    # tagging a VM: the event names it; one read of that VM, no listing
    eng.vms["a"] = vm("a", tags=("prod",))
    eng.log(440, "a")
    ch = await inv.poll_once()
    assert ch.vm_ids == {"a"} and not ch.visibility
    assert {t.name for t in inv.get("a").tags} == {"prod"}
    assert eng.lists == 1 and eng.reads == 1
    # a snapshot event names the VM but changes nothing kept: no read; nor a note of ovault's
    eng.log(68, "a")
    eng.log(9000, "a", origin="ovault")
    ch = await inv.poll_once()
    assert not ch and eng.reads == 1
    # a new VM: read, and visibility changes (users may see it)
    eng.vms["c"] = vm("c")
    eng.log(34, "c")
    ch = await inv.poll_once()
    assert ch.vm_ids == {"c"} and ch.visibility and ids(inv) == ["a", "b", "c"]
    # a rename: a membership change
    eng.vms["c"] = vm("c", name="renamed")
    eng.log(35, "c")
    assert (await inv.poll_once()).vm_ids == {"c"} and inv.get("c").name == "renamed"
    # a status change (started) re-reads the VM but is no membership change
    eng.vms["c"].status = "down"
    eng.log(153, "c")
    assert not (await inv.poll_once()).vm_ids and eng.reads == 4


async def test_removal_without_vm_relists_gaps_and_errors_relist(setup):
    eng, inv, clock, changes = setup
    await inv.poll_once()
    del eng.vms["b"]
    eng.log(113)                      # "VM removed": names no VM -> a full listing
    clock.t += 31
    ch = await inv.poll_once()
    assert ch.full and ch.vm_ids == {"b"} and ch.visibility and ids(inv) == ["a"]
    assert eng.lists == 2
    # a gap (the engine pruned events we never read): relist, but at most every 30 s
    eng.vms["d"] = vm("d")
    eng.events.append(NS(index=eng.events[-1].index + 5, code=1, vm=None))
    ch = await inv.poll_once()
    assert eng.lists == 2 and inv.stats["gaps"] == 1 and ids(inv) == ["a"]   # too soon
    clock.t += 30
    await inv.poll_once()
    assert eng.lists == 3 and ids(inv) == ["a", "d"]
    # the engine fails: the inventory is not fresh (callers ask the engine), relists after
    eng.fail = True
    task = asyncio.create_task(inv.run())
    for _ in range(20):
        await asyncio.sleep(0)
        if inv.stats["errors"]:
            break
    assert inv.stats["errors"] >= 1 and not inv.fresh()
    eng.vms["e"] = vm("e")
    eng.fail = False
    for _ in range(50):
        await asyncio.sleep(0)
        if inv.fresh():
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert inv.fresh() and ids(inv) == ["a", "d", "e"] and eng.lists >= 4


async def test_reconcile_period_relists_what_the_log_missed(setup):
    eng, inv, clock, changes = setup
    await inv.poll_once()
    eng.vms["a"] = vm("a", cluster="c2")          # changed without an event
    await inv.poll_once()
    assert inv.get("a").cluster.id == "c1"
    clock.t += 300
    ch = await inv.poll_once()
    assert ch.full and ch.vm_ids == {"a"} and inv.get("a").cluster.id == "c2"


async def test_many_vms_in_one_poll_are_one_listing(setup):
    eng, inv, clock, changes = setup
    await inv.poll_once()
    for i in range(30):
        eng.vms[f"n{i}"] = vm(f"n{i}")
        eng.log(34, f"n{i}")
    ch = await inv.poll_once()
    assert ch.full and eng.lists == 2 and eng.reads == 0 and len(ids(inv)) == 32


async def test_wiring_requests_protection_and_forgets_visibility(setup):
    eng, inv, clock, changes = setup
    calls = []
    svc = NS(cache=None)
    maint = NS(request_protection=lambda: calls.append("protection"))
    attach(inv, service=svc, maintenance=maint, wake=lambda: calls.append("wake"),
           forget=[lambda: calls.append("forget")])
    assert svc.cache is inv
    await inv.poll_once()
    assert calls == ["protection", "wake"]
    calls.clear()
    eng.log(850, "a")                               # a permission granted on VM a
    await inv.poll_once()
    assert calls == ["forget"]
    calls.clear()
    eng.vms["b"] = vm("b", tags=())                  # untagged
    eng.log(446, "b")
    await inv.poll_once()
    assert calls == ["protection", "wake"]
