"""A disk copy whose image transfer lost its ticket continues on a new transfer.

ovirt-imageio keeps its tickets in memory: a daemon restarted in the middle of
a copy has forgotten the transfer's ticket, and nothing adds it back (vdsm
adds a ticket once, when the engine starts the transfer). The copy then fails
with `transfer_not_found` (imageio answers 403/404 for the ticket) or
`imageio_unavailable` (it could not be reached for the whole retry budget),
and the engine shows the transfer `paused_system`, failed or still
`transferring` with a dead ticket. A copy that fails otherwise while the engine
shows its transfer paused by the system, failed or canceled by the system (or
gone) is resumed the same way.

`copy_with_resume` runs a disk copy and, when it fails that way, ends that
transfer (downloads are finalized: the disk is never touched; uploads are
canceled), creates a new image transfer for the same disk (from the same
engine backup or snapshot image), and copies again into the same backup id:
the store already holds every chunk the interrupted attempt wrote (they are
found by digest and not written again, docs/mover.md), so the copy goes on
from what was durably written. Each resume is recorded in the machine's
resources (`resumes[disk]`) and as a `<kind>.transfer_resumed` event naming
the old and new transfer, the cause and how far the copy had got. At most
`MAX_RESUMES` per disk: an imageio that keeps losing tickets fails the disk
with its own words.
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
_ENDED = ("finished", "cancelled")


def ticket_lost(err: BaseException) -> bool:
    return getattr(err, "code", None) in TICKET_LOST


async def copy_with_resume(m: VmMachine, disk_id: str, t_rec: dict, *, direction: str,
                           copy: Callable[[object, int], Awaitable[dict]],
                           new_transfer: Callable[[], Awaitable[object]]) -> tuple[dict, dict]:
    """Run `copy(transfer, attempt)` on `t_rec`'s transfer; on a lost ticket, end
    that transfer, make a new one with `new_transfer()` and copy again (`attempt`
    counts the resumes: a mover keeps each copy by its id). Returns
    (the copy's result, the record of the transfer that completed it)."""
    t = await m.wait_transferring(t_rec["id"])
    t_rec = {**t_rec, "host_id": t.host_id}
    resumes = list(((m.res.get("resumes") or {}).get(disk_id)) or [])
    while True:
        try:
            return await copy(t, len(resumes)), t_rec
        except Exception as err:
            if len(resumes) >= MAX_RESUMES or not (ticket_lost(err) or await _broken(m, t_rec["id"])):
                raise
            cause = str(err)
        done = (m.disk_progress.get(disk_id) or [0, 0])[0]
        m.log.warning("image transfer lost its ticket; resuming the disk on a new transfer",
                      disk_id=disk_id, transfer_id=t_rec["id"], error=cause, bytes_done=done)
        await _end(m, t_rec["id"], "finalize" if direction == "download" else "cancel")
        await m.record(transfers={disk_id: {**t_rec, "finalized": True}})
        new = await new_transfer()
        entry = {"from": t_rec["id"], "to": new.id, "cause": cause, "bytes_done": done}
        resumes.append(entry)
        t_rec = {"id": new.id, "host_id": new.host_id, "finalized": False}
        await m.record(transfers={disk_id: t_rec}, resumes={disk_id: resumes})
        await m.journal.event(f"{m.kind}.transfer_resumed", {"disk_id": disk_id, **entry,
                                                             "attempt": len(resumes)})
        t = await m.wait_transferring(new.id)
        t_rec = {**t_rec, "host_id": t.host_id}


async def _broken(m: VmMachine, transfer_id: str) -> bool:
    """The engine gave up on the transfer under the failed copy (paused it, failed
    or canceled it, or dropped it): a new transfer may well work."""
    try:
        t = await m.engine.get_transfer(transfer_id)
    except Exception:
        return False
    return t is None or t.phase in BROKEN


async def _end(m: VmMachine, transfer_id: str, action: str) -> None:
    """End a transfer whatever its phase (transferring, paused, failed)."""
    e = m.engine
    cur = await e.get_transfer(transfer_id)
    if cur is None or cur.phase.startswith(_ENDED):
        return
    if not cur.phase.startswith("finalizing"):
        try:
            await e.transfer_action(transfer_id, action, m.correlation_id)
        except Exception as err:  # it may have ended meanwhile (the engine's own timeout)
            now = await e.get_transfer(transfer_id)
            if now is not None and not now.phase.startswith(_ENDED + ("finalizing",)):
                raise err

    async def ended():
        x = await e.get_transfer(transfer_id)
        return x is None or x.phase.startswith(_ENDED)
    await m.wait(ended, timeout=m.deps.timeouts.transfer_end, interval=m.deps.timeouts.transfer_poll,
                 what=f"image transfer {transfer_id} to end")
