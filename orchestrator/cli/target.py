"""Target commands: `verify`, `gc`, `export`, `mount`, `import`.

They work on the backup target directly (configuration: `--config`,
`--sandbox`, `--state-dir`, as for `serve`), so they also work when no
orchestrator runs — e.g. a new appliance pointed at an existing target.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import uuid

from imageio_ext.store import Store, StoreKeyInvalid, StoreKeyMissing, StoreKeyWrong

from .common import CliError, add_config_options, load_config
from .progress import TaskProgress


def register(sub) -> None:
    common = add_config_options

    v = sub.add_parser("verify", help="re-read and re-hash every chunk of backups")
    v.add_argument("backups", nargs="*", help="backup ids (default: every backup on the target)")
    v.add_argument("--vm", help="only the backups of this VM id")
    v.add_argument("--no-catalog", action="store_true",
                   help="do not record the result in the catalog (damaged flag, backup.damaged event)")
    common(v)
    g = sub.add_parser("gc", help="remove chunks no published backup references")
    g.add_argument("--grace-hours", type=float, default=24.0,
                   help="never remove chunks younger than this (protects running backups)")
    common(g)
    e = sub.add_parser("export", help="write a backup disk to a raw or qcow2 file")
    e.add_argument("backup")
    e.add_argument("disk")
    e.add_argument("file")
    e.add_argument("--format", choices=("raw", "qcow2"), default="qcow2")
    common(e)
    m = sub.add_parser("mount", help="expose a backup disk read-only over NBD (file-level recovery)")
    m.add_argument("backup")
    m.add_argument("disk")
    m.add_argument("--socket", help="unix socket path (default: a new 0700 directory under $TMPDIR)")
    m.add_argument("--port", type=int, default=None,
                   help="serve over TCP on loopback instead (no authentication: local users can read it)")
    m.add_argument("--host", default="127.0.0.1", help="TCP listen address with --port; loopback only")
    common(m)
    i = sub.add_parser("import", help="rebuild the catalog from the target's manifests")
    common(i)
    for p in (v, g, e, m, i):
        p.set_defaults(func=lambda args: asyncio.run(run(args)))


async def _store(args) -> tuple[Store, object]:
    cfg = load_config(args)
    if not cfg.target.url:
        raise CliError("no backup target configured (target.url)")
    from ..store_keys import open_existing
    try:
        return await open_existing(cfg), cfg
    except (StoreKeyMissing, StoreKeyWrong, StoreKeyInvalid) as e:
        raise CliError(str(e)) from None


async def _find(store: Store, backup_id: str):
    try:
        uuid.UUID(backup_id)
    except ValueError:
        raise CliError(f"{backup_id!r} is not a backup id") from None
    for info in await store.list_backups():
        if info.backup_id == backup_id.lower():
            return info
    raise CliError(f"backup {backup_id} is not on the target")


async def run(args) -> int:
    store, cfg = await _store(args)
    try:
        return await {"verify": verify, "gc": gc, "export": export, "mount": mount,
                      "import": import_}[args.cmd](args, store, cfg)
    finally:
        await store.close()


async def verify(args, store, cfg) -> int:
    """Verify backups; damaged chunks are set aside on the target (the next
    backup of the VM rewrites them) and, unless ``--no-catalog``, each result
    is recorded in the catalog (`verify_record.record`)."""
    from .verify_record import catalog_recorder, print_report
    if args.backups:
        infos = [await _find(store, b) for b in args.backups]
    else:
        infos = await store.list_backups(_vm_arg(args.vm) if args.vm else None)
    bad = 0
    out = []
    async with catalog_recorder(cfg, enabled=not args.no_catalog) as record:
        with TaskProgress("bytes", enabled=not args.json) as bars:
            for info in infos:
                r = await store.verify(info.vm_id, info.backup_id,
                                       progress=bars.step(f"verify {info.backup_id[:8]}"),
                                       catalog_digests=await record.digests(info))
                bad += not r.ok
                doc = r.to_dict()
                doc["catalog"] = await record(info, r)
                out.append(doc)
                if not args.json:
                    print_report(info, r)
    if args.json:
        print(json.dumps(out, indent=2))
    elif not infos:
        print("no backups on the target")
    return 1 if bad else 0


def _vm_arg(vm: str) -> str:
    try:
        return str(uuid.UUID(vm))
    except ValueError:
        raise CliError(f"{vm!r} is not a VM id") from None


async def gc(args, store, cfg) -> int:
    with TaskProgress("directories", enabled=not args.json) as bars:
        r = await store.gc(grace_seconds=args.grace_hours * 3600, progress=bars.step("gc"))
    doc = {"chunks_removed": r.chunks_removed, "bytes_removed": r.bytes_removed,
           "chunks_kept_young": r.chunks_kept_young, "referenced": r.referenced,
           "orphans_removed": r.orphans_removed, "tmp_removed": r.tmp_removed}
    print(json.dumps(doc, indent=2) if args.json else
          f"removed {r.chunks_removed} chunks ({r.bytes_removed / 2**20:.1f} MiB), "
          f"{len(r.orphans_removed)} unpublished backups, {r.tmp_removed} temporary files; "
          f"kept {r.referenced} referenced and {r.chunks_kept_young} young chunks")
    return 0


async def export(args, store, cfg) -> int:
    info = await _find(store, args.backup)
    if info.disk(args.disk.lower()) is None:
        raise CliError(f"disk {args.disk} is not in backup {args.backup}")
    with TaskProgress("bytes", enabled=not args.json) as bars:
        r = await store.export_disk(info.vm_id, info.backup_id, args.disk.lower(), args.file, fmt=args.format,
                                    progress=bars.step(f"export {args.disk[:8]}"))
    print(json.dumps({"path": str(r.path), "format": r.format, "size": r.size, "sha256": r.sha256})
          if args.json else f"wrote {r.path} ({r.format}, {r.size} bytes, sha256 {r.sha256})")
    return 0


async def mount(args, store, cfg) -> int:
    from imageio_ext.nbd.server import check_loopback, serve_disk
    info = await _find(store, args.backup)
    if info.disk(args.disk.lower()) is None:
        raise CliError(f"disk {args.disk} is not in backup {args.backup}")
    tcp = args.port is not None
    if tcp and args.socket:
        raise CliError("--socket and --port exclude each other")
    if tcp:
        try:
            check_loopback(args.host)
        except ValueError as e:
            raise CliError(str(e)) from None
    reader = await store.open_disk(info.vm_id, info.backup_id, args.disk.lower())
    private = None
    sock_path = args.socket
    if not tcp and not sock_path:
        private = tempfile.mkdtemp(prefix="ovault-mount-")  # 0700: only this user reaches the socket
        sock_path = os.path.join(private, "nbd.sock")
    try:
        export_ = await serve_disk(reader, unix_path=None if tcp else sock_path,
                                   host=args.host if tcp else None, port=args.port or 0)
    except BaseException:
        if private:
            shutil.rmtree(private, ignore_errors=True)
        raise
    url = getattr(export_, "url", None) or (f"nbd+unix:///?socket={sock_path}" if sock_path else None)
    print(f"read-only NBD export of disk {args.disk} of backup {args.backup}: {url}")
    print(f"  qemu-img info {url}    |    guestfish --ro -a {url} -i    (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await export_.close()
        if private:
            shutil.rmtree(private, ignore_errors=True)
    return 0


def _parents_first(infos: list) -> list:
    """The backups in an order where each comes after its parent (when that is listed)."""
    by_id = {i.backup_id: i for i in infos}
    out, placed = [], set()

    def place(i, chain=()):
        if i.backup_id in placed or i.backup_id in chain:  # (a cycle cannot come from ovault)
            return
        p = by_id.get(i.parent_id) if i.parent_id else None
        if p is not None:
            place(p, chain + (i.backup_id,))
        placed.add(i.backup_id)
        out.append(i)
    for i in infos:
        place(i)
    return out


async def import_(args, store, cfg) -> int:
    """Every published backup becomes a catalog row (its manifest carries the VM
    configuration), so a new appliance can restore from an existing target."""
    from .. import catalog as cat
    from .local_catalog import open_catalog
    added = known = 0
    infos = await store.list_backups()
    on_target = {i.backup_id for i in infos}
    async with open_catalog(cfg) as c:
        for info in _parents_first(infos):
            bid = uuid.UUID(info.backup_id)
            try:
                await c.backups.get(bid)
                known += 1
                continue
            except cat.NotFound:
                pass
            meta = info.meta or {}
            config = meta.get("config") or {}
            await c.backups.create(
                backup_id=bid, vm_id=info.vm_id, vm_name=meta.get("vm_name") or config.get("name"),
                mode=meta.get("mode", "full"), method=meta.get("method", "snapshot"),
                # A parent pruned since is not on the target: the increment still restores
                # (its index names every chunk), it just has no parent row to point at.
                parent_id=uuid.UUID(info.parent_id) if info.parent_id in on_target else None,
                checkpoint_id=meta.get("checkpoint_id"), config=config)
            for d in info.disks:
                dc = (config.get("disks") or {}).get(d.disk_id, {})
                await c.backups.put_disk(bid, cat.BackupDisk(
                    disk_id=d.disk_id, provisioned_size=d.size, format=dc.get("format", "raw"),
                    alias=dc.get("alias"), index_digest=d.index_sha256,
                    info={k: val for k, val in dc.items() if k != "disk_id"}))
            await c.backups.complete(bid, size_bytes=sum(d.size for d in info.disks), new_bytes=0,
                                     consistency=info.consistency, checkpoint_id=meta.get("checkpoint_id"))
            added += 1
    print(json.dumps({"imported": added, "already_known": known}) if args.json else
          f"imported {added} backups ({known} were already in the catalog)")
    return 0
