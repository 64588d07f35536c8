"""The job and machine lifecycles, declared once.

Every other copy is derived from these names: the catalog's enums
(`orchestrator/catalog/models.py`), the SQL its repositories write, and the
checks that keep the schema's CHECK constraints (`tests/integration/catalog/
test_catalog_lifecycle.py`) and the state tables of `docs/operations.md` and
`docs/api.md` (`tests/unit/test_lifecycle.py`) in step.

A machine (one VM of a job) walks

    queued → <its work states, in order> → succeeded
    any work state → cleanup → failed | canceled

and a job is `queued` until a replica claims it, `running` while its machines
move, and ends in the state its machines roll up to.
"""
from __future__ import annotations

QUEUED = "queued"
CLEANUP = "cleanup"
TERMINAL: tuple[str, ...] = ("succeeded", "failed", "canceled")
JOB_STATES: tuple[str, ...] = (QUEUED, "running", *TERMINAL)


def machine_states(work_states: tuple[str, ...]) -> tuple[str, ...]:
    """Every state of a machine whose work states are `work_states`."""
    return (QUEUED, *work_states, CLEANUP, *TERMINAL)


def machine_flow(work_states: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """The forward transitions `(trigger, source, dest)`: `start` leaves
    `queued`, `<state>_done` leaves each work state for the next."""
    chain = (QUEUED, *work_states, TERMINAL[0])
    return tuple(("start" if src == QUEUED else f"{src}_done", src, dst)
                 for src, dst in zip(chain, chain[1:]))
