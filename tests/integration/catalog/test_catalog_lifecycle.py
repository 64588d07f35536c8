"""The schema against the machines: the lifecycle is declared by the machine
classes (statemachines/); the CHECK constraints of the applied schema must
name exactly their states. Migrations are forward-only, so drift is caught
here rather than edited away. And a transition commits with its event."""
import re

import pytest

from orchestrator.catalog import CatalogError, JobKind, NewMachine
from statemachines import JOB_STATES, MACHINES, TERMINAL

pytestmark = pytest.mark.integration


def _names(array_sql: str) -> set[str]:
    return set(re.findall(r"'([^']*)'::text", array_sql))


async def _checks(pool, table: str) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype = 'c'", table)
    return {r["conname"]: r["def"] for r in rows}


def _column_check(checks: dict[str, str], column: str) -> set[str]:
    """The names of `CHECK (column IN (...))` (PostgreSQL shows `= ANY (ARRAY[...])`)."""
    found = [d for d in checks.values()
             if re.fullmatch(rf"CHECK \(\({column} = ANY \(ARRAY\[[^\]]*\]\)\)\)", d)]
    assert len(found) == 1, f"one CHECK on {column} expected, got {found} in {checks}"
    return _names(found[0])


async def test_job_states_and_kinds_in_the_schema_are_the_machines(pool):
    checks = await _checks(pool, "jobs")
    assert _column_check(checks, "state") == set(JOB_STATES)
    assert _column_check(checks, "kind") == {k.value for k in JobKind}
    assert set(MACHINES) <= {k.value for k in JobKind}
    terminal = re.search(r"\(state = ANY \(ARRAY\[([^\]]*)\]\)\)",
                         checks["jobs_finished_when_terminal"])
    assert _names(terminal.group(1)) == set(TERMINAL)


async def test_machine_states_in_the_schema_are_the_machines(pool):
    checks = await _checks(pool, "machines")
    assert _column_check(checks, "kind") == set(MACHINES)
    per_kind = {m.group(1): _names(m.group(2)) for m in re.finditer(
        r"kind = '(\w+)'::text\) AND \(state = ANY \(ARRAY\[([^\]]*)\]\)",
        checks["machines_state_of_kind"])}
    assert per_kind == {kind: set(m.STATES) for kind, m in MACHINES.items()}


async def _machine(catalog):
    job = await catalog.jobs.create("backup", [NewMachine(vm_id="vm-1")])
    return job, job.machines[0]


async def test_transition_and_its_event_commit_together(catalog):
    job, m = await _machine(catalog)
    start = await catalog.events.last_id()
    won = await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot", version=0,
                                        event=("backup.state", {"from": "queued", "to": "snapshot"}))
    assert (won.state, won.version) == ("snapshot", 1)
    [ev] = await catalog.events.list_after(start)
    assert (ev.type, ev.job_id, ev.payload) == ("backup.state", job.id,
                                                {"from": "queued", "to": "snapshot"})
    # a swap that loses writes no event
    assert await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot", version=0,
                                         event=("backup.state", {"to": "snapshot"})) is None
    assert [e.id for e in await catalog.events.list_after(start)] == [ev.id]


async def test_an_event_that_cannot_be_written_undoes_the_transition(catalog):
    _, m = await _machine(catalog)
    start = await catalog.events.last_id()
    with pytest.raises(CatalogError):  # events.type is NOT NULL
        await catalog.jobs.transition(m.id, from_state="queued", to_state="snapshot", version=0,
                                      event=(None, {"to": "snapshot"}))
    row = await catalog.jobs.get_machine(m.id)
    assert (row.state, row.version) == ("queued", 0)
    assert await catalog.events.list_after(start) == []


async def test_a_transition_joins_the_callers_transaction(catalog):
    _, m = await _machine(catalog)
    start = await catalog.events.last_id()

    class Abort(Exception):
        pass
    with pytest.raises(Abort):
        async with catalog.transaction() as tx:
            assert await tx.jobs.transition(m.id, from_state="queued", to_state="snapshot",
                                            version=0, event=("backup.state", {})) is not None
            raise Abort()
    assert (await catalog.jobs.get_machine(m.id)).state == "queued"
    assert await catalog.events.list_after(start) == []
