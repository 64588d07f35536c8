"""A disk copy whose image transfer lost its ticket continues on a new transfer.

ovirt-imageio keeps its tickets in memory: a daemon restarted in the middle of
a copy has forgotten the transfer's ticket, and nothing adds it back (vdsm
adds a ticket once, when the engine starts the transfer). The copy then fails
with `transfer_not_found` (imageio answers 403/404 for the ticket) or
`imageio_unavailable` (it could not be reached for the whole retry budget),
and the engine shows the transfer `paused_system`, failed or still
`transferring` with a dead ticket. A copy that fails otherwise while the engine
shows its transfer paused by the system, failed or canceled by the system (or
gone) is resumed the same way, and so is one it finds finalized by a run that
stopped before recording the copy done.

`copy_with_resume` runs a disk copy and, when it fails that way, ends that
transfer, creates a new image transfer for the same disk (from the same engine
backup or snapshot image, or, for a restore, into the same disk), and copies
again. Both directions end the broken transfer with *finalize*, never cancel:
the engine accepts finalize in any phase short of finished (paused by the
system included); for a download it only removes the ticket, and for an
upload it removes the ticket, verifies the volume and unlocks the disk as it
is. Canceling an upload (or an upload the engine fails) makes the engine
remove the disk the transfer wrote, whether the transfer created it or it
existed before (an in-place restore's disk), so a restore would lose its
target. The engine's own `resume` action is no help either: it moves a paused
transfer back to transferring without adding the lost ticket to the daemon
again (the next poll pauses it again).

A backup copies again into the same backup id: the store already holds every
chunk the interrupted attempt wrote (they are found by digest and not written
again, docs/mover.md), so the copy goes on from what was durably written. A
restore writes the whole disk again: its writes are idempotent (the same
bytes at the same offsets, zero runs zeroed again), and the ranges an
interrupted upload completed are not known for sure (requests in flight when
the daemon went away may or may not have landed). Each resume is recorded in
the machine's resources (`resumes[disk]`) and as a `<kind>.transfer_resumed`
event naming the old and new transfer, the cause and how far the copy had
got. At most `MAX_RESUMES` per disk: an imageio that keeps losing tickets
fails the disk with its own words.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from .base import VmMachine

MAX_RESUMES = 3
# The copy engine's error codes (imageio_ext.copy.errors) meaning "this
# transfer's ticket is gone or its daemon was away".
TICKET_LOST = {"transfer_not_found", "imageio_unavailable"}
# Engine phases of a transfer the engine itself gave up on.
BROKEN = {"paused_system", "finished_failure", "finalizing_failure", "cancelled_system"}
_ENDING = ("finalizing", "cancelled")  # the engine is ending it already
# Finalized by ovault after a copy whose end was not recorded (the replica
# stopped in between): the copy is done again on a new transfer (a restore's
# writes are idempotent; a backup's chunks are found by digest).
SELF_FINALIZED = {"finalizing_success", "finished_success"}


UNKNOWN = "?"  # the engine could not be asked about the transfer


def ticket_lost(err: BaseException) -> bool:
    return getattr(err, "code", None) in TICKET_LOST


def should_resume(err: BaseException, resumes: int, phase: str | None) -> bool:
    """Whether a copy that failed with `err` goes on on a new transfer, after
    `resumes` resumes of that disk, the engine showing its transfer in `phase`
    (None: the engine dropped it; `UNKNOWN`: the engine could not be asked)."""
    if resumes >= MAX_RESUMES:
        return False
    if ticket_lost(err):
        return True
    return phase is None or phase in BROKEN or phase in SELF_FINALIZED


async def copy_with_resume(m: VmMachine, disk_id: str, t_rec: dict, *, direction: str,
                           copy: Callable[[object, int], Awaitable[dict]],
                           new_transfer: Callable[[], Awaitable[object]],
                           info: dict | None = None) -> tuple[dict, dict]:
    """Run `copy(transfer, attempt)` on `t_rec`'s transfer; on a lost ticket, end
    that transfer, make a new one with `new_transfer()` and copy again (`attempt`
    counts the resumes: a mover keeps each copy by its id). Returns
    (the copy's result, the record of the transfer that completed it). `info` is
    added to the `transfer_resumed` events."""
    resumes = list(((m.res.get("resumes") or {}).get(disk_id)) or [])
    while True:
        try:
            # a transfer found paused here (a run resumed after a crash, a new transfer
            # that never got its ticket) is resumed like a copy that failed under it
            t = await m.wait_transferring(t_rec["id"])
            t_rec = {**t_rec, "host_id": t.host_id}
            return await copy(t, len(resumes)), t_rec
        except Exception as err:
            phase = UNKNOWN if ticket_lost(err) or len(resumes) >= MAX_RESUMES \
                else await _phase(m, t_rec["id"])
            if not should_resume(err, len(resumes), phase):
                raise
            cause = str(err)
        done = (m.disk_progress.get(disk_id) or [0, 0])[0]
        m.log.warning("image transfer lost its ticket; resuming the disk on a new transfer",
                      disk_id=disk_id, transfer_id=t_rec["id"], error=cause, bytes_done=done)
        await end_transfer(m, t_rec["id"])
        await m.record(transfers={disk_id: {**t_rec, "finalized": True}})
        new = await new_transfer()
        entry = {"from": t_rec["id"], "to": new.id, "cause": cause, "bytes_done": done}
        resumes.append(entry)
        t_rec = {"id": new.id, "host_id": new.host_id, "finalized": False}
        await m.record(transfers={disk_id: t_rec}, resumes={disk_id: resumes})
        if m.deps.on_resume is not None:
            m.deps.on_resume(m.kind)
        await m.journal.event(f"{m.kind}.transfer_resumed", {"disk_id": disk_id, **(info or {}), **entry,
                                                             "attempt": len(resumes),
                                                             "direction": direction})


async def _phase(m: VmMachine, transfer_id: str) -> str | None:
    """The engine's phase of the transfer under the failed copy (None: gone)."""
    try:
        t = await m.engine.get_transfer(transfer_id)
    except Exception:
        return UNKNOWN
    return None if t is None else t.phase


async def end_transfer(m: VmMachine, transfer_id: str, action: str = "finalize") -> bool:
    """End a transfer with `action` whatever its phase (transferring, paused),
    unless it is ending or ended already; wait until it has ended. False when
    it had ended (or was gone) already."""
    e = m.engine
    cur = await e.get_transfer(transfer_id)
    if cur is None or cur.phase.startswith("finished"):
        return False
    if not cur.phase.startswith(_ENDING):
        try:
            await e.transfer_action(transfer_id, action, m.correlation_id)
        except Exception as err:  # it may have ended meanwhile (the engine's own timeout)
            now = await e.get_transfer(transfer_id)
            if now is not None and not now.phase.startswith(_ENDING + ("finished",)):
                raise err

    async def ended():
        x = await e.get_transfer(transfer_id)
        return x is None or x.phase.startswith("finished")
    await m.wait(ended, timeout=m.deps.timeouts.transfer_end, interval=m.deps.timeouts.transfer_poll,
                 what=f"image transfer {transfer_id} to end")
    return True
