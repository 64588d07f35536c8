"""Backup and restore as explicit, persisted state machines (architecture §2, §3).

Knows nothing of HTTP or SQL: the orchestrator passes a `Journal` and `Deps`.
The machine classes are where the states are declared (`lifecycle` holds what
every machine and job shares); `MACHINES` maps a job kind to its machine.
"""
from .backup import BackupMachine
from .base import CatalogUnreachable, Canceled, LostOwnership, StepFailed, VmMachine
from .lifecycle import JOB_STATES, TERMINAL
from .ports import Deps, Timeouts
from .restore import RestoreMachine

MACHINES: dict[str, type[VmMachine]] = {m.kind: m for m in (BackupMachine, RestoreMachine)}

__all__ = ["BackupMachine", "RestoreMachine", "VmMachine", "MACHINES", "Deps", "Timeouts",
           "TERMINAL", "JOB_STATES", "StepFailed", "Canceled", "LostOwnership",
           "CatalogUnreachable"]
