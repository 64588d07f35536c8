"""Consistency from the engine's own answer: a running VM's CBT backup is
started with require_consistency=true (the engine fails it when the guest
cannot be frozen); `prefer` falls back to a crash-consistent attempt and says
why, `require` fails the VM's backup naming the cause, `crash` never asks."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from statemachines import BackupMachine
from statemachines import consistency as c
from statemachines import engine as ev

from .test_backup_consistency import PayloadJournal
from .test_statemachines import FakeCatalog, FakeEngine, FakeStore, Journal, backup_machine, deps


@pytest.mark.parametrize("setting, method, status, agent, asked, why_not", [
    ("prefer", "cbt", "up", True, True, None),
    ("require", "cbt", "up", True, True, None),
    ("crash", "cbt", "up", True, False, None),
    ("prefer", "cbt", "down", False, False, None),  # nothing to freeze; the engine ignores the flag
    ("require", "cbt", "down", False, False, None),
    ("prefer", "snapshot", "up", True, False, None),  # POST /snapshots takes no such flag
    ("prefer", "cbt", None, True, False, None),
    ("prefer", "cbt", "up", False, False, c.NO_AGENT),  # the attempt could only fail
    ("require", "cbt", "up", False, True, None),  # the engine decides
])
def test_when_ovault_asks_for_a_frozen_guest(setting, method, status, agent, asked, why_not):
    assert c.ask_engine(setting, method, status, agent) == (asked, why_not)


def test_events_prove_a_freeze_only_when_the_engine_logged_one_and_no_failure():
    assert c.from_events([10766, c.FREEZE_VM_SUCCESS, 10768]) == "filesystem"
    assert c.from_events([10766, c.FREEZE_VM_SUCCESS, c.FAILED_TO_FREEZE_VM]) == "crash"
    assert c.from_events([]) == "crash"  # vdsm froze it without a word, or nobody did


def test_a_failed_consistent_attempt_falls_back_unless_required_and_bad_settings_are_refused():
    assert c.after_failed_attempt("prefer") == "fallback"
    assert c.after_failed_attempt("require") == "fail"
    with pytest.raises(ValueError, match="'always' is not one of prefer, require, crash"):
        c.ask_engine("always", "cbt", "up")


def running(agent=True) -> FakeEngine:
    e = FakeEngine()
    e.vms["vm1"] = ev.Vm(id="vm1", name="web1", status="up", type="server", cluster_id="c1",
                         guest_agent=True)
    e.agent_answers = agent
    return e


async def test_a_running_guest_whose_agent_answers_is_filesystem_without_any_audit_event():
    e, cat, store = running(), FakeCatalog(), FakeStore()
    j = Journal()
    assert await backup_machine(j, deps(e, catalog=cat, store=store)).run() == "succeeded"
    bid = j.resources["backup_id"]
    assert e.required == {bid: True}
    assert j.resources["consistency"] == "filesystem"
    assert cat.rows[bid]["consistency"] == store.metas[bid]["consistency"] == "filesystem"
    assert e.backups[bid].phase == "succeeded"


async def test_prefer_falls_back_to_a_crash_consistent_backup_and_says_why():
    e, cat, store = running(agent=False), FakeCatalog(), FakeStore()
    e.freeze_events = [c.FREEZE_VM_SUCCESS]  # not believed for a failed consistent attempt
    j = PayloadJournal()
    assert await backup_machine(j, deps(e, catalog=cat, store=store)).run() == "succeeded"
    bid, eb = j.resources["backup_id"], j.resources["engine_backup"]
    assert eb["consistent_attempt"] == bid and eb["id"] != bid and not eb["require_consistency"]
    assert e.required == {bid: True, eb["id"]: False}
    assert e.backups[bid].phase == "failed" and e.backups[eb["id"]].phase == "succeeded"
    assert ("finalize_backup", bid) not in e.calls  # a failed engine backup holds nothing
    assert j.resources["consistency"] == cat.rows[bid]["consistency"] == "crash"
    assert store.metas[bid]["consistency"] == "crash"
    fb = j.payloads["backup.consistency_fallback"]
    assert fb["engine_backup_id"] == bid and "require_consistency=true" in fb["reason"]
    assert "guest agent" in j.resources["consistency_reason"]


async def test_require_fails_the_vms_backup_naming_the_cause_and_takes_no_other():
    e, cat, store = running(agent=False), FakeCatalog(), FakeStore()
    j = Journal()
    m = backup_machine(j, deps(e, catalog=cat, store=store, consistency="require"))
    assert await m.run() == "failed"
    bid = j.resources["backup_id"]
    assert "guest agent did not freeze" in m.error and '"require"' in m.error
    assert list(e.backups) == [bid] and e.backups[bid].phase == "failed"
    assert [x for x in e.calls if x[0] == "start_backup"] == [("start_backup", None)]
    assert "backup.consistency_fallback" not in j.events
    assert store.metas == {} and cat.rows == {}


async def test_crash_never_asks_and_reads_the_audit_events():
    e = running(agent=False)
    e.freeze_events = []
    j = Journal()
    assert await backup_machine(j, deps(e, consistency="crash")).run() == "succeeded"
    assert e.required == {j.resources["backup_id"]: False}
    assert j.resources["consistency"] == "crash"


async def test_prefer_does_not_ask_when_the_engine_reports_no_guest_agent():
    e = running(agent=False)
    e.vms["vm1"] = replace(e.vms["vm1"], guest_agent=False)
    j = Journal()
    assert await backup_machine(j, deps(e)).run() == "succeeded"
    assert e.required == {j.resources["backup_id"]: False}  # one engine backup, not asked
    assert j.resources["consistency"] == "crash"
    assert j.resources["consistency_reason"] == c.NO_AGENT
    assert "backup.consistency_fallback" not in j.events


async def test_a_resumed_machine_whose_consistent_attempt_failed_meanwhile_falls_back():
    e, cat = running(agent=False), FakeCatalog()
    j = Journal()
    m = backup_machine(j, deps(e, catalog=cat))
    # The replica died after the POST; the engine failed that backup meanwhile.
    await m.record(backup_id="b-1", method="cbt", mode_requested="auto",
                   disks={"d1": {"alias": "boot", "size": 8 << 20, "format": "cow",
                                 "backup": "incremental", "sparse": True, "bootable": True,
                                 "interface": "virtio_scsi", "storage_domain": "sd1"}},
                   engine_backup={"id": "b-1", "from_checkpoint": None, "parent_id": None,
                                  "require_consistency": True})
    await e.start_backup("vm1", "b-1", ["d1"], None, "x", "cid", require_consistency=True)
    j2 = Journal(state="snapshot", resources=copy.deepcopy(j.resources))
    m2 = BackupMachine(j2, deps(e, catalog=cat), vm_id="vm1", job_id=m.job_id,
                       machine_id=m.machine_id)
    assert await m2.run() == "succeeded"
    assert j2.resources["engine_backup"]["consistent_attempt"] == "b-1"
    assert cat.rows["b-1"]["consistency"] == "crash"


def test_the_port_reads_a_guest_agent_from_the_guest_os_the_engine_reports():
    import ovirtsdk4.types as types

    from orchestrator.engine.port import to_vm
    up = types.Vm(id="v", name="n", status=types.VmStatus.UP)
    assert to_vm(up).guest_agent is False
    up.guest_operating_system = types.GuestOperatingSystem(distribution="Debian GNU/Linux")
    assert to_vm(up).guest_agent is True


@pytest.mark.parametrize("setting", ["prefer", "require"])
async def test_an_engine_older_than_4_4_4_is_not_asked_its_flag_would_prove_nothing(setting):
    e = running()
    e.engine_version = (4, 4, 3)
    e.freeze_events = []
    j = Journal()
    m = backup_machine(j, deps(e, consistency=setting))
    if setting == "require":
        assert await m.run() == "failed"
        assert "predates require_consistency (4.4.4)" in m.error and "4.4.3" in m.error
        assert e.backups == {}  # refused before any engine backup was started
        return
    assert await m.run() == "succeeded"
    assert e.required == {j.resources["backup_id"]: False}
    assert j.resources["consistency"] == "crash"  # no freeze event: nothing proves a freeze
    assert "predates require_consistency" in j.resources["consistency_reason"]


async def test_a_consistent_attempt_that_vanishes_is_not_blamed_on_the_guest():
    class Vanishing(FakeEngine):
        async def get_backup(self, vm_id, backup_id):
            return None if self.backups.get(backup_id) and self.required.get(backup_id) else \
                self.backups.get(backup_id)
    e = Vanishing()
    e.vms["vm1"] = ev.Vm(id="vm1", name="web1", status="up", type="server", cluster_id="c1",
                         guest_agent=True)
    j = Journal()
    m = backup_machine(j, deps(e))
    assert await m.run() == "failed"
    assert "disappeared before it was ready" in m.error
    assert "guest agent" not in m.error and "backup.consistency_fallback" not in j.events
