"""How consistent a backup's point in time is, and what ovault asks the engine for.

A backup is recorded `filesystem` when the guest's file systems were frozen
(through the guest agent) for its point in time, `crash` otherwise.

The dependable signal is the engine's own answer: a CBT backup of a running
VM started with `require_consistency=true` (VmBackupsService.add, engine
4.4.4+) fails when the guest could not be frozen, so when such a backup
becomes ready the guest was frozen. A real engine leaves the freeze of a live
backup to vdsm and logs no audit event for it; its API's Backup and Snapshot
carry no consistency field. Snapshots take no such flag: for them the audit
events under the operation's correlation id are read instead, which is sound
only one way — FREEZE_VM_SUCCESS (logged when the engine freezes the guest
itself) proves a freeze; its absence proves nothing and is recorded `crash`.

The setting (`[backup] consistency`):

- `prefer` (default): ask for consistency; when the engine fails that attempt,
  back up again crash consistent and say why (event `backup.consistency_fallback`);
- `require`: ask for it; when the engine fails the attempt, the VM's backup fails;
- `crash`: never ask (the audit events may still prove a freeze).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable

from .base import StepFailed

SETTINGS = ("prefer", "require", "crash")

# The engine's audit-log codes (AuditLogType) around a guest freeze.
FAILED_TO_FREEZE_VM, FREEZE_VM_SUCCESS = 10764, 10767

# What the engine tells of a failed backup: its phase (no reason in the API).
# Its log names the cause; ovault names the likely one.
CONSISTENT_ATTEMPT_FAILED = (
    "the engine failed the backup it was asked to take with the guest's file systems frozen "
    "(require_consistency=true): the guest agent did not freeze them (not installed, not "
    "running or not answering), or the engine's log names another cause")


def check_setting(value: str) -> str:
    if value not in SETTINGS:
        raise ValueError(f"backup consistency {value!r} is not one of {', '.join(SETTINGS)}")
    return value


NO_AGENT = ("the engine reports no guest agent for the running VM (no guest OS information): "
            "its file systems cannot be frozen")


# The first engine that honours require_consistency on VmBackupsService.add; an
# older one ignores the flag, so a backup it makes ready proves nothing.
REQUIRE_CONSISTENCY_SINCE = (4, 4, 4)


def old_engine(version) -> str:
    v = ".".join(map(str, version))
    return (f"the engine ({v}) predates require_consistency ("
            f"{'.'.join(map(str, REQUIRE_CONSISTENCY_SINCE))}): it cannot be asked to freeze the guest")


def ask_engine(setting: str, method: str, vm_status: str | None,
               guest_agent: bool = True, engine_version=REQUIRE_CONSISTENCY_SINCE
               ) -> tuple[bool, str | None]:
    """(whether to start the engine backup with `require_consistency=true`,
    why not when that makes the backup `crash`). Only a CBT backup (snapshots
    take no such flag) of a running VM (one that is down has nothing to
    freeze; the engine ignores the flag then). With `prefer`, not when the
    engine reports no guest agent (the attempt could only fail); `require`
    asks anyway and lets the engine decide. An engine older than
    REQUIRE_CONSISTENCY_SINCE ignores the flag: not asked (`require` fails)."""
    setting = check_setting(setting)
    if setting == "crash" or method != "cbt" or vm_status != "up":
        return False, None
    if tuple(engine_version) < REQUIRE_CONSISTENCY_SINCE:
        if setting == "require":
            raise StepFailed(old_engine(engine_version) + '; backup consistency is "require"')
        return False, old_engine(engine_version)
    if not guest_agent and setting == "prefer":
        return False, NO_AGENT
    return True, None


def from_events(codes: Iterable[int]) -> str:
    """The secondary signal: `filesystem` only when the engine logged that it
    froze the guest and no failure to freeze under the operation."""
    c = set(codes)
    return "filesystem" if FREEZE_VM_SUCCESS in c and FAILED_TO_FREEZE_VM not in c else "crash"


def after_failed_attempt(setting: str) -> str:
    """What a failed consistent attempt leads to: `fallback` (a crash-consistent
    attempt) or `fail` (the VM's backup fails naming the cause)."""
    return "fail" if check_setting(setting) == "require" else "fallback"


def required_failure(vm_name: str) -> str:
    return (f"VM {vm_name}: {CONSISTENT_ATTEMPT_FAILED}; backup consistency is \"require\", "
            "so no crash-consistent backup was taken")


# --- the backup machine's steps (statemachines/backup.py) ---------------------------------
async def crash_attempt(m, eb: dict) -> dict:
    """The engine failed backup `eb`, started with require_consistency=true (it
    ended `failed`, holding nothing: no lock, no scratch disk, no new
    checkpoint). `require`: machine `m`'s backup fails naming the cause; else a
    new engine backup, crash consistent, recorded before it is started."""
    reason = CONSISTENT_ATTEMPT_FAILED
    if after_failed_attempt(m.deps.consistency) == "fail":
        raise StepFailed(required_failure(m.res.get("vm_name") or m.vm_id))
    m.log.warning("consistent backup failed, crash consistent instead", reason=reason,
                  engine_backup=eb["id"])
    eb = {**eb, "id": str(uuid.uuid4()), "require_consistency": False, "consistent_attempt": eb["id"]}
    await m.record(engine_backup=eb, consistency_reason=reason)
    await m.journal.event("backup.consistency_fallback", {
        "vm_id": m.vm_id, "reason": reason, "engine_backup_id": eb["consistent_attempt"]})
    return eb


async def from_audit_log(m) -> str:
    """The secondary signal for snapshots and backups not started with
    require_consistency: the freeze events of the engine's audit log under
    machine `m`'s correlation id (`from_events`); `crash` when unreadable."""
    try:
        codes = await m.engine.event_codes(m.correlation_id)
    except Exception as err:  # an unreadable audit log never fails a backup
        m.log.warning("engine events unreadable; consistency recorded as crash", error=str(err))
        return "crash"
    return from_events(codes)
