"""The lifecycle is declared by the machine classes; everything else follows.

The catalog's enums are derived from the machines, and the state tables of
docs/operations.md and the state lists of docs/api.md must name exactly the
machines' states (the schema's CHECKs: tests/integration/catalog/
test_catalog_lifecycle.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.catalog import models
from statemachines import JOB_STATES, MACHINES, TERMINAL, BackupMachine, RestoreMachine, VmMachine

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _table_states(markdown: str, heading: str) -> list[str]:
    """The backticked names in the first column of the table under `heading`."""
    section = markdown.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append(line.split("|")[1])
    assert rows and rows[0].strip() == "state", f"no state table under {heading!r}"
    return [name for cell in rows[1:] for name in re.findall(r"`([a-z_]+)`", cell)]


def test_machines_declare_their_lifecycle():
    assert BackupMachine.STATES == ("queued", "snapshot", "metadata", "transfer", "finalize",
                                    "cleanup", "succeeded", "failed", "canceled")
    assert RestoreMachine.STATES == ("queued", "prepare", "transfer", "finalize", "cleanup",
                                     "succeeded", "failed", "canceled")
    assert [d for _, _, d in BackupMachine.FLOW] == ["snapshot", "metadata", "transfer", "finalize",
                                                   "succeeded"]
    assert set(MACHINES) == {"backup", "restore"}


def test_catalog_enums_are_the_machines_states():
    assert [s.value for s in models.BackupState] == list(BackupMachine.STATES)
    assert [s.value for s in models.RestoreState] == list(RestoreMachine.STATES)
    assert [s.value for s in models.JobState] == list(JOB_STATES)
    assert models.TERMINAL == set(TERMINAL)
    assert {k: set(v) for k, v in models.MACHINE_STATES.items()} == \
        {k: set(m.STATES) for k, m in MACHINES.items()}
    assert set(MACHINES) <= {k.value for k in models.JobKind}


def test_operations_guide_state_tables_are_the_machines_states():
    text = (DOCS / "operations.md").read_text()
    assert _table_states(text, "### Backup states") == list(BackupMachine.STATES)
    assert _table_states(text, "### Restore states") == list(RestoreMachine.STATES)


def test_api_reference_lists_the_machines_states():
    text = " ".join((DOCS / "api.md").read_text().split())
    m = re.search(r"backup `([^`]*)` \(`([^`]*)`\), restore `([^`]*)` \(`([^`]*)`\)", text)
    assert m, "docs/api.md no longer lists the machine states"

    def names(*chains):
        return {n for c in chains for n in re.split(r"\s*(?:→|\|)\s*", c)}
    assert names(m.group(1), m.group(2)) == set(BackupMachine.STATES)
    assert names(m.group(3), m.group(4)) == set(RestoreMachine.STATES)
    jobs = re.search(r'"job\.updated"[^}]*?"state": "([a-z|]+)"', text)
    assert set(jobs.group(1).split("|")) == set(JOB_STATES)


def test_every_state_of_a_machine_has_its_step():
    for m in MACHINES.values():
        assert set(m.STEPS) == set(m.STATES) - set(TERMINAL)
    with pytest.raises(TypeError, match=r"no step for \['check'\]"):
        class Incomplete(VmMachine):  # noqa: F841 - the class statement is the test
            WORK_STATES = ("check",)
            STEPS = {"queued": VmMachine.step_queued, "cleanup": VmMachine.step_queued}
