"""What a machine records in its journal (`resources`), as typed records.

The journal keeps them as JSON (the catalog's `machines.resources` column,
merged as RFC 7386 patches), so these are `TypedDict`s: the machines read and
patch plain dicts whose every key is declared here. `total=False` records
fill in step by step; a key that is absent has not happened yet.
"""
from __future__ import annotations

from typing import Any, TypedDict


class DiskRec(TypedDict):
    """A disk of the VM as backed up (also the catalog's disk `info`)."""
    alias: str | None
    size: int
    format: str | None          # "cow" | "raw"
    backup: str | None          # "incremental" | "none"
    sparse: bool
    bootable: bool
    interface: str | None
    storage_domain: str | None


class EngineBackupRec(TypedDict, total=False):
    id: str                     # ours, chosen before POST /vms/{id}/backups
    from_checkpoint: str | None
    parent_id: str | None
    to_checkpoint: str | None
    ready: bool
    finalized: bool
    require_consistency: bool   # started with require_consistency=true (statemachines/consistency.py)
    consistent_attempt: str     # the id of the failed consistent attempt this one replaced


class SnapshotRec(TypedDict, total=False):
    description: str            # carries job and machine ids: found again after a crash
    id: str
    images: dict[str, str]      # disk id -> image (volume) id in the snapshot
    ready: bool
    removed: bool


class TransferRec(TypedDict, total=False):
    id: str
    host_id: str | None
    finalized: bool


class CopyRec(TypedDict):
    done: bool
    result: dict[str, Any]      # the mover's copy result (bytes read/new, index digest, ...)


class Outcome(TypedDict, total=False):
    outcome: str                # "failed" | "canceled": where cleanup ends
    error: str


class BackupResources(Outcome, total=False):
    backup_id: str
    method: str                 # "cbt" | "snapshot"
    method_reason: str | None
    mode_requested: str         # "auto" | "full"
    mode: str                   # "full" | "incremental"
    parent_id: str | None
    fallback_reason: str | None
    disks: dict[str, DiskRec]
    disk_modes: dict[str, str]  # disk id -> "full" | "incremental"
    engine_backup: EngineBackupRec
    snapshot: SnapshotRec
    metadata: bool
    vm_name: str
    consistency: str
    consistency_reason: str     # why a running VM's backup is `crash` (a failed consistent attempt)
    transfers: dict[str, TransferRec]
    copies: dict[str, CopyRec]
    published: bool
    checkpoints_removed: list[str]  # engine checkpoints removed after success (no longer needed)
    resumes: dict[str, list[dict[str, Any]]]  # disk id -> copies resumed on a new transfer (resume.py)
    engine_released: dict[str, Any]  # set after a long catalog outage (orchestrator/jobs/outage.py)


class PlanEntry(TypedDict, total=False):
    """One disk of a restore: where it goes and how far it got."""
    target_disk: str            # chosen (and recorded) before the disk is created
    size: int
    format: str
    alias: str
    bootable: bool
    interface: str
    backup: str
    sparse: bool
    storage_domain: str | None
    created: bool
    copied: bool
    result: dict[str, Any]


class RestoreResources(Outcome, total=False):
    kind: str                   # "new" | "in_place" | "disks"
    backup_id: str
    source_vm: str
    plan: dict[str, PlanEntry]  # source disk id -> entry
    vm_create_sent: bool
    vm_name: str
    target_vm: str | None
    transfers: dict[str, TransferRec]
    resumes: dict[str, list[dict[str, Any]]]  # source disk id -> uploads resumed on a new transfer
    config_restored: bool
    owner_granted: bool
    powered_on: bool
