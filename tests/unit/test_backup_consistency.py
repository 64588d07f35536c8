"""A backup's consistency comes from what the engine reports for its point in
time: `filesystem` when the audit log of the job's operation shows the guest
freeze succeeded (FREEZE_VM_SUCCESS, no FAILED_TO_FREEZE_VM), `crash`
otherwise — recorded in the catalog, the manifest's metadata and the
backup.created event, for CBT and snapshot backups alike."""
from __future__ import annotations

import pytest

from statemachines.backup import FAILED_TO_FREEZE_VM, FREEZE_VM_SUCCESS

from .test_statemachines import FakeCatalog, FakeEngine, FakeStore, Journal, backup_machine, deps


class PayloadJournal(Journal):
    """Keeps the events' payloads too."""

    async def event(self, type_, payload):
        await super().event(type_, payload)
        self.payloads = {**getattr(self, "payloads", {}), type_: payload}


class EventlessEngine(FakeEngine):
    async def event_codes(self, correlation_id):
        raise ConnectionError("the engine's audit log is unreachable")


@pytest.mark.parametrize("cow", [True, False], ids=["cbt", "snapshot"])
@pytest.mark.parametrize("codes, expected", [
    ([10766, FREEZE_VM_SUCCESS, 10768], "filesystem"),
    ([10766, FAILED_TO_FREEZE_VM], "crash"),
    ([10766, FREEZE_VM_SUCCESS, FAILED_TO_FREEZE_VM], "crash"),
    ([], "crash"),
], ids=["frozen", "freeze-failed", "mixed", "vm-down"])
async def test_consistency_follows_the_engine_freeze_events(cow, codes, expected):
    e, store, cat = FakeEngine(cow=cow), FakeStore(), FakeCatalog()
    e.freeze_events = codes
    j = PayloadJournal()
    assert await backup_machine(j, deps(e, store=store, catalog=cat)).run() == "succeeded"
    bid = j.resources["backup_id"]
    assert j.resources["consistency"] == expected
    assert cat.rows[bid]["consistency"] == expected
    assert store.metas[bid]["consistency"] == expected
    assert j.payloads["backup.created"]["consistency"] == expected


async def test_an_unreadable_audit_log_records_crash_and_the_backup_succeeds():
    e, cat = EventlessEngine(), FakeCatalog()
    j = Journal()
    assert await backup_machine(j, deps(e, catalog=cat)).run() == "succeeded"
    assert cat.rows[j.resources["backup_id"]]["consistency"] == "crash"
