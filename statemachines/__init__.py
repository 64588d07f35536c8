"""Backup and restore as explicit, persisted state machines (architecture §2, §3).

Knows nothing of HTTP or SQL: the orchestrator passes a `Journal` and `Deps`.
"""
from .backup import BackupMachine
from .base import TERMINAL, Canceled, LostOwnership, StepFailed
from .ports import Deps, Timeouts
from .restore import RestoreMachine

__all__ = ["BackupMachine", "RestoreMachine", "Deps", "Timeouts", "TERMINAL", "StepFailed",
           "Canceled", "LostOwnership"]
