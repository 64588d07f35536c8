"""Backups, snapshots and freezes of a running guest, through qemu itself —
what libvirt does for vdsm (`backupBegin` in pull mode, `blockdev` snapshots,
`fsFreeze` through the guest agent).

A live backup, per disk (node = the disk's active format node in the guest):

1. a scratch qcow2 file is opened as the fleecing node, its backing the disk
   node (`blockdev-add`);
2. one `transaction` takes the point in time: `blockdev-backup sync=none`
   from the disk node to the fleecing node (before the guest overwrites a
   cluster, qemu copies the old content into the scratch), the new
   checkpoint's persistent dirty bitmap on the disk node, and for an
   incremental a disabled bitmap on the fleecing node merged from the
   checkpoint's bitmap — the changed blocks, frozen at that instant;
3. the fleecing node is exported read-only over qemu's NBD server on a unix
   socket (`nbd-server-start`, `block-export-add`) with that bitmap as the
   `qemu:dirty-bitmap:` meta context; imageio serves it from an
   `nbd:unix:<sock>:exportname=<disk>` URL.

Checkpoints follow the sandbox's model (storage.py): a checkpoint's bitmap
records every change since it was created, so an incremental from checkpoint
C uses C's bitmap alone. `end()` undoes everything but the new bitmap.

A live snapshot opens a new qcow2 overlay (`blockdev-add`) and makes it the
disk's active node (`blockdev-snapshot`); the bitmaps are carried to the new
overlay, as vdsm does, so dirty tracking continues.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..proc import run
from .qmp import Agent, AgentUnavailable, Qmp, QmpError

__all__ = ["LiveBackup", "begin", "end", "freeze", "thaw", "snapshot", "commit",
           "AgentUnavailable"]


@dataclass
class LiveBackup:
    backup_id: str
    sock: Path
    disks: dict = field(default_factory=dict)  # disk_id -> {node, fleece, scratch, job, export, bitmap}

    def url(self, disk_id: str) -> str:
        return f"nbd:unix:{self.sock}:exportname={self.disks[disk_id]['export']}"


def _short(s: str) -> str:
    # qemu node names are at most 31 characters
    return s.replace("-", "")[:8]


async def begin(qmp: Qmp, backup_id: str, nodes: dict[str, str], sizes: dict[str, int], *,
                scratch_dir: Path, sock: Path, to_checkpoint: str | None,
                from_checkpoint: str | None, checkpoint_disks=None,
                before_point=None, after_point=None) -> LiveBackup:
    """Start a pull-mode backup of `nodes` ({disk_id: active node}). A disk
    whose node lacks `from_checkpoint`'s bitmap is exported in full (its
    `bitmap` is None); `to_checkpoint` goes to `checkpoint_disks` (default:
    all). `before_point`/`after_point` (async, no arguments) run right around
    the point-in-time transaction — the guest freeze and thaw. On failure
    everything set up so far is undone."""
    lb = LiveBackup(backup_id, sock)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    try:
        actions = []
        for disk_id, node in nodes.items():
            tag = f"{_short(backup_id)}-{_short(disk_id)}"
            scratch = scratch_dir / f"{backup_id}-{disk_id}.scratch.qcow2"
            await run("qemu-img", "create", "-q", "-f", "qcow2", scratch, str(sizes[disk_id]))
            d = {"node": node, "fleece": f"fleece-{tag}", "scratch": scratch,
                 "job": f"backup-{tag}", "export": disk_id, "bitmap": None, "added": False}
            lb.disks[disk_id] = d
            await qmp.execute("blockdev-add", {
                "driver": "qcow2", "node-name": d["fleece"], "backing": node,
                "file": {"driver": "file", "filename": str(scratch)}})
            d["added"] = True
            have = await qmp.bitmaps(node)
            if from_checkpoint and from_checkpoint in have:
                d["bitmap"] = f"backup-{_short(backup_id)}"
                actions += [
                    ("block-dirty-bitmap-add", {"node": d["fleece"], "name": d["bitmap"],
                                                "persistent": False, "disabled": True}),
                    ("block-dirty-bitmap-merge", {"node": d["fleece"], "target": d["bitmap"],
                                                  "bitmaps": [{"node": node,
                                                               "name": from_checkpoint}]})]
            if to_checkpoint and to_checkpoint not in have and (
                    checkpoint_disks is None or disk_id in checkpoint_disks):
                actions.append(("block-dirty-bitmap-add", {"node": node, "name": to_checkpoint,
                                                           "persistent": True}))
            actions.append(("blockdev-backup", {"job-id": d["job"], "device": node,
                                                "target": d["fleece"], "sync": "none",
                                                "auto-finalize": True, "auto-dismiss": True}))
        # The point in time: one atomic transaction for every disk.
        if before_point:
            await before_point()
        try:
            await qmp.transaction(actions)
        finally:
            if after_point:
                await after_point()
        for d in lb.disks.values():
            d["job_started"] = True
        await qmp.execute("nbd-server-start", {
            "addr": {"type": "unix", "data": {"path": str(sock)}}})
        lb.nbd_started = True
        for disk_id, d in lb.disks.items():
            exp = {"type": "nbd", "id": d["job"], "node-name": d["fleece"],
                   "name": d["export"], "writable": False, "allocation-depth": True}
            if d["bitmap"]:
                exp["bitmaps"] = [d["bitmap"]]
            await qmp.execute("block-export-add", exp)
            d["exported"] = True
        return lb
    except BaseException:
        await end(qmp, lb)
        raise


async def end(qmp: Qmp, lb: LiveBackup):
    """Stop the exports, the fleecing jobs and nodes, remove the scratch files.
    The new checkpoint's bitmap stays. Safe to call twice or after a partial begin."""
    errors = []
    for d in lb.disks.values():
        if d.pop("exported", False):
            try:
                await qmp.execute("block-export-del", {"id": d["job"]})
                await qmp.wait_event("BLOCK_EXPORT_DELETED", timeout=30, id=d["job"])
            except (QmpError, TimeoutError) as e:
                errors.append(e)
    if getattr(lb, "nbd_started", False):
        lb.nbd_started = False
        try:
            await qmp.execute("nbd-server-stop")
        except QmpError as e:
            errors.append(e)
    for d in lb.disks.values():
        if d.pop("job_started", False):
            try:
                await qmp.execute("block-job-cancel", {"device": d["job"], "force": True})
                await _job_gone(qmp, d["job"])
            except (QmpError, TimeoutError) as e:
                errors.append(e)
        if d.pop("added", False):
            try:
                await qmp.execute("blockdev-del", {"node-name": d["fleece"]})
            except QmpError as e:
                errors.append(e)
        Path(d["scratch"]).unlink(missing_ok=True)
    lb.sock.unlink(missing_ok=True)
    if errors:
        raise errors[0]


async def _job_gone(qmp: Qmp, job: str, timeout: float = 30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(j.get("id") == job for j in await qmp.execute("query-jobs")):
        if loop.time() > deadline:
            raise TimeoutError(f"block job {job} did not end")
        await asyncio.sleep(0.05)


# --- freeze -------------------------------------------------------------------------------------
async def freeze(agent_path: str | Path | None, timeout: float = 5.0) -> int:
    """Freeze the guest's file systems; the number frozen. AgentUnavailable
    when no agent answers (the caller goes crash-consistent)."""
    if agent_path is None:
        raise AgentUnavailable("the guest has no agent channel")
    agent = Agent(agent_path, timeout)
    try:
        return int(await agent.execute("guest-fsfreeze-freeze", timeout=max(timeout, 30)))
    except QmpError as e:
        # The agent answered but could not freeze: thaw whatever it froze.
        try:
            await agent.execute("guest-fsfreeze-thaw")
        except (QmpError, AgentUnavailable):
            pass
        raise AgentUnavailable(f"the guest agent could not freeze: {e.desc}") from None


async def thaw(agent_path: str | Path, timeout: float = 5.0) -> int:
    return int(await Agent(agent_path, timeout).execute("guest-fsfreeze-thaw",
                                                        timeout=max(timeout, 30)))


# --- snapshots ----------------------------------------------------------------------------------
async def snapshot(qmp: Qmp, node: str, overlay: Path, new_node: str, backing_name: str,
                   backing_fmt: str, size: int, file_node: str | None = None) -> None:
    """Put a new qcow2 overlay (file `overlay`, whose header names
    `backing_name` so offline tools find the chain) over the running `node`
    and carry the node's bitmaps to it."""
    await run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on",
              "-u", "-b", backing_name, "-F", backing_fmt, overlay, str(size))
    try:
        await qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": new_node,
                                           "backing": None,
                                           "file": {"driver": "file", "filename": str(overlay),
                                                    "node-name": file_node or f"{new_node}-file"}})
    except QmpError:
        overlay.unlink(missing_ok=True)
        raise
    bitmaps = await qmp.bitmaps(node)
    actions = [("blockdev-snapshot", {"node": node, "overlay": new_node})]
    for name in bitmaps:
        actions += [("block-dirty-bitmap-add", {"node": new_node, "name": name,
                                                "persistent": True}),
                    ("block-dirty-bitmap-merge", {"node": new_node, "target": name,
                                                  "bitmaps": [{"node": node, "name": name}]})]
    try:
        await qmp.transaction(actions)
    except QmpError:
        await qmp.execute("blockdev-del", {"node-name": new_node})
        overlay.unlink(missing_ok=True)
        raise


async def commit(qmp: Qmp, active_node: str, top: str, base: str, job: str,
                 timeout: float = 600.0) -> None:
    """A live merge: commit node `top` into `base` (its backing) in the chain
    whose active node is `active_node`. When `top` is the active node the job
    is completed once ready (qemu pivots the disk to `base`); otherwise qemu
    drops `top` from the chain when done."""
    args = {"job-id": job, "device": active_node, "base-node": base}
    if top != active_node:
        args["top-node"] = top
    await qmp.execute("block-commit", args)
    if top == active_node:
        await qmp.wait_event("BLOCK_JOB_READY", timeout=timeout, device=job)
        await qmp.execute("job-complete", {"id": job})
    ev = await qmp.wait_event("BLOCK_JOB_COMPLETED", timeout=timeout, device=job)
    if ev["data"].get("error"):
        raise QmpError("block-commit", "JobFailed", ev["data"]["error"])
    if top == active_node:
        # The disk now runs on `base`, whose bitmaps are writable again: carry
        # the ones only `top` had (qemu kept those on `top`, still open since
        # it was added by name), then close `top`.
        have = set(await qmp.bitmaps(base))
        for name in await qmp.bitmaps(top):
            if name not in have:
                await qmp.execute("block-dirty-bitmap-add", {"node": base, "name": name,
                                                             "persistent": True})
            await qmp.execute("block-dirty-bitmap-merge", {"node": base, "target": name,
                                                           "bitmaps": [{"node": top, "name": name}]})
        await qmp.execute("blockdev-del", {"node-name": top})
    else:
        try:  # a node added by name stays open once out of the chain
            await qmp.execute("blockdev-del", {"node-name": top})
        except QmpError:
            pass


async def node_of(qmp: Qmp, path: str | Path) -> str:
    """The format node that has the image file `path` open."""
    nodes = await qmp.named_nodes()
    for name, n in nodes.items():
        if n.get("drv") in ("file", "host_device"):
            continue
        f = n.get("file") or ""
        if f.startswith("json:"):
            # qemu names a node by its options when its backing file is named
            # differently in the header than it was opened.
            f = (json.loads(f[5:]).get("file") or {}).get("filename")
        if f == str(path):
            return name
    raise QmpError("query-named-block-nodes", "DeviceNotFound",
                   f"no format node on {path} in {[(k, n.get('file')) for k, n in nodes.items()]}")
