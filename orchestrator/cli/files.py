"""File-level restore commands (docs/file-restore.md):

    ovault files ls BACKUP [PATH] [--disk DISK]
    ovault files get BACKUP PATH... [--disk DISK] [-o OUT] [--archive]
    ovault files search VM NAME [--no-wait]

They talk to `ovault serve` over its REST API. PATH is /<file system>/<path>:
`ovault files ls BACKUP` lists the disk's file systems (sda1, vg0/root, ...).
`get` writes one file as it is, or a folder (or several paths) as a tar.gz,
with a progress bar; the output appears only when complete. `search` waits
for the backup disks it had to index (a progress bar), unless --no-wait.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import uuid

import aiohttp

from .api import Api
from .common import CliError, add_client_options
from .progress import TaskProgress

DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=900)


def register(sub) -> None:
    f = sub.add_parser("files", help="browse, download and search files inside backups")
    fs = f.add_subparsers(dest="files_cmd", required=True, metavar="ACTION")
    ls = fs.add_parser("ls", help="list a folder of a backup disk (no PATH: its file systems)")
    ls.add_argument("backup", help="backup id")
    ls.add_argument("path", nargs="?", default="/", help="/<file system>/<path>, e.g. /sda1/etc")
    get = fs.add_parser("get", help="download a file, or folders and files as a tar.gz")
    get.add_argument("backup", help="backup id")
    get.add_argument("paths", nargs="+", metavar="PATH")
    get.add_argument("-o", "--output", help="file to write (default: the file's name, or NAME.tar.gz)")
    get.add_argument("--archive", action="store_true", help="a tar.gz even for one file")
    get.add_argument("--force", action="store_true", help="overwrite the output file")
    se = fs.add_parser("search", help="which backups of a VM hold files matching NAME (a glob)")
    se.add_argument("vm", help="VM name or id")
    se.add_argument("name", help="a name or glob (*.conf); with a /, matched on the whole path")
    se.add_argument("--no-wait", action="store_true",
                    help="print what the indexes hold now; do not wait for backups being indexed")
    se.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    for p in (ls, get):
        p.add_argument("--disk", help="disk id or alias (default: the backup's only disk)")
    for p in (ls, get, se):
        add_client_options(p)
        p.set_defaults(func=lambda args: asyncio.run(run(args)))


async def run(args) -> int:
    async with Api(args) as api:
        if args.files_cmd == "search":
            return await search(api, args)
        base = await _base(api, args)
        if args.files_cmd == "ls":
            return await ls(api, args, base)
        return await get(api, args, base)


async def _base(api: Api, args) -> str:
    try:
        bid = str(uuid.UUID(args.backup))
    except ValueError:
        raise CliError(f"{args.backup!r} is not a backup id") from None
    b = await api.req("GET", f"/api/v1/backups/{bid}")
    disks = b.get("disks") or []
    if args.disk:
        match = [d for d in disks if args.disk.lower() in (d["disk_id"], (d.get("alias") or "").lower())]
        if not match:
            raise CliError(f"backup {bid} has no disk {args.disk!r}; it has: "
                           + ", ".join(f"{d['disk_id']} ({d.get('alias')})" for d in disks))
        disk = match[0]
    elif len(disks) == 1:
        disk = disks[0]
    else:
        raise CliError(f"backup {bid} has {len(disks)} disks; choose one with --disk: "
                       + ", ".join(f"{d['disk_id']} ({d.get('alias')})" for d in disks))
    return f"/api/v1/backups/{bid}/disks/{disk['disk_id']}/files"


def _line(e: dict) -> str:
    kind = {"directory": "d", "symlink": "l", "file": "-", "filesystem": "F", "volume_group": "V"}.get(e["type"], "?")
    mode = e.get("mode") or "    "
    size = "" if e.get("size") is None else str(e["size"])
    when = (e.get("mtime") or "")[:19].replace("T", " ")
    name = e["name"] + ("/" if e["type"] in ("directory", "filesystem", "volume_group") else "")
    extra = f" -> {e['target']}" if e.get("target") is not None else (f" ({e['fstype']})" if e.get("fstype") else "")
    return f"{kind} {mode:>4} {size:>12} {when:19} {name}{extra}"


async def ls(api: Api, args, base: str) -> int:
    import json
    doc = await api.req("GET", base, params={"path": args.path})
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for e in doc["items"]:
        print(_line(e))
    for name, why in (doc.get("unmountable") or {}).items():
        print(f"! {name}: not mountable ({why})", file=sys.stderr)
    return 0


async def _is_file(api: Api, base: str, path: str) -> tuple[bool, int | None]:
    doc = await api.req("GET", base, params={"path": path})
    items = doc["items"]
    if len(items) == 1 and items[0]["path"] == "/" + "/".join(p for p in path.split("/") if p) \
            and items[0]["type"] == "file":
        return True, items[0]["size"]
    return False, None


async def get(api: Api, args, base: str) -> int:
    import json
    single = len(args.paths) == 1 and not args.archive
    is_file, size = await _is_file(api, base, args.paths[0]) if single else (False, None)
    last = [p for p in args.paths[0].split("/") if p][-1:] or ["files"]
    out = args.output or (last[0] if is_file else f"{last[0] if len(args.paths) == 1 else 'files'}.tar.gz")
    if os.path.exists(out) and not args.force:
        raise CliError(f"{out} exists; pass --force to overwrite it")
    tmp = f"{out}.part"
    if is_file:
        method, url, kw = "GET", base + "/content", {"params": {"path": args.paths[0]}}
    else:
        method, url, kw = "POST", base + "/archive", {"json": {"paths": args.paths}}
    done = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "wb") as f, TaskProgress("bytes", enabled=not args.json) as bars:
            progress = bars.step(f"get {last[0]}")
            async with api.session.request(method, api.url + url, timeout=DOWNLOAD_TIMEOUT, **kw) as r:
                if r.status >= 400:
                    doc = await r.json(content_type=None)
                    raise CliError(f"{method} {url}: {r.status} {doc.get('detail') if isinstance(doc, dict) else doc}")
                total = r.content_length or size or 0
                async for data in r.content.iter_chunked(1 << 20):
                    f.write(data)
                    done += len(data)
                    progress(done, total)
                if total and done != total:
                    raise CliError(f"the download ended after {done} of {total} bytes")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except aiohttp.ClientError as e:
        raise CliError(f"the download failed after {done} bytes: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(json.dumps({"path": out, "bytes": done, "archive": not is_file}) if args.json
          else f"wrote {out} ({done} bytes{', tar.gz' if not is_file else ''})")
    return 0


async def search(api: Api, args) -> int:
    """Search; by default wait for the indexing the search started (a progress bar), then
    search again: the answer then covers every backup disk that could be indexed."""
    import json
    [vm_id] = await api.resolve_vms([args.vm])
    url = f"/api/v1/vms/{vm_id}/files"
    doc = await api.req("GET", url, params={"name": args.name})
    if not args.no_wait and (doc.get("indexing") or {}).get("state") == "running":
        await wait_indexing(api, doc["indexing"]["url"], quiet=args.json, poll=args.poll)
        doc = await api.req("GET", url, params={"name": args.name})
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print_search(doc, args.name)
    return 0


async def wait_indexing(api: Api, url: str, *, quiet: bool = False, poll: float = 2.0) -> dict:
    """Poll a VM's indexing (GET /api/v1/vms/{id}/files/indexing) until it is done, with a bar
    of the backup disks indexed."""
    with TaskProgress("disks", enabled=not quiet) as bars:
        progress = bars.step("indexing backups")
        while True:
            st = await api.req("GET", url)
            progress(st["done"] + len(st["failed"]), st["total"])
            if st["state"] != "running":
                return st
            await asyncio.sleep(poll)


def print_search(doc: dict, name: str) -> None:
    if not doc["items"]:
        print(f"no file matching {name!r} in the last {doc['backups_searched']} backups"
              + ("" if doc.get("complete", True) else " indexed so far"))
    for item in doc["items"]:
        print(f"{item['path']}  (disk {item.get('disk_alias') or item['disk_id']})")
        for v in item["versions"]:
            print(f"  {(v['created_at'] or '')[:19]}  backup {v['backup_id']}  {v['type']:<9} "
                  f"{'' if v['size'] is None else v['size']:>12}  mtime {(v['mtime'] or '')[:19]}")
    missing = doc.get("not_indexed") or []
    if missing:
        failed = [x for x in missing if x["state"] == "failed"]
        print(f"({len(missing)} backup disk(s) not searched: not indexed yet"
              + (f", {len(failed)} failed" if failed else "") + ")", file=sys.stderr)
        for x in failed:
            print(f"  ! backup {x['backup_id']} disk {x.get('disk_alias') or x['disk_id']}: {x.get('error')}",
                  file=sys.stderr)
    if doc.get("truncated"):
        print("(results truncated: narrow the pattern)", file=sys.stderr)
