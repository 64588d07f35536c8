"""File-level restore over HTTP (docs/file-restore.md):

- `GET  /api/v1/backups/{id}/disks/{disk_id}/files?path=/`      list a folder
- `GET  /api/v1/backups/{id}/disks/{disk_id}/files/content?path=` one file, streamed
- `POST /api/v1/backups/{id}/disks/{disk_id}/files/archive`       a tar.gz, streamed
- `GET  /api/v1/vms/{id}/files?name=<glob>`                       which backups hold what
- `GET|DELETE /api/v1/vms/{id}/files/indexing`                   search's background indexing

Access as for a restore: the operator role, and for a non-admin engine user
the `backup_disk` permit on the VM and the disk (the permit that lets the
engine hand out that disk's data). Paths are validated before any appliance
starts (`files.paths.split`).
"""
from __future__ import annotations

import contextlib
import urllib.parse
from typing import Any

from aiohttp import web

from ..errors import Conflict, NotFound, Unavailable
from ..files import FileRestore, FileService, split_path
from ..files.search import check_pattern
from ..keys import CATALOG, CONFIG, STORE
from . import validate as v
from .auth import allow, require
from .authz import Obj, authorizer, restricted
from .views import json_response

routes = web.RouteTableDef()
FILES = web.AppKey("files", Any)  # files.FileService
BASE = "/api/v1/backups/{id}/disks/{disk_id}/files"
MAX_ARCHIVE_PATHS = 100


async def files_ctx(app: web.Application):
    cfg = app[CONFIG]
    settings = getattr(cfg, "files", None) or FileRestore()
    svc = FileService(app[STORE], settings, cfg.state_dir,
                      live_backups=lambda ids: app[CATALOG].backups.not_deleted(ids))
    app[FILES] = svc
    svc.start()
    yield
    await svc.close()


def _service(request) -> FileService:
    svc = request.app.get(FILES)
    if svc is None or not svc.settings.enabled:
        raise Unavailable("file-level restore is disabled on this server (files.enabled)")
    return svc


async def _check(request, p, b, disk_id: str | None = None) -> None:
    if restricted(p):
        az = authorizer(request.app)
        await az.require(p, "backup_disk", Obj("vm", b.vm_id, b.vm_name))
        for d in b.disks:
            if disk_id is None or d.disk_id == disk_id:
                await az.require(p, "backup_disk", Obj("disk", d.disk_id, d.alias, vm_id=b.vm_id))


async def _open(request):
    """The principal, backup, disk and (after the checks) the disk's session."""
    p = require(request, "operator")
    bid = v.path_uuid(request, "id")
    disk_id = v.uuid_str(request.match_info["disk_id"], "disk_id")
    b = await request.app[CATALOG].backups.get(bid)
    if not p.sees(b.vm_id) or b.status == "deleted":
        raise NotFound("backup", bid)
    if b.status != "succeeded":
        raise Conflict(f"backup {b.id} is {b.status}; only succeeded backups can be browsed")
    disk = next((d for d in b.disks if d.disk_id == disk_id), None)
    if disk is None:
        raise NotFound("disk", f"{disk_id} in backup {b.id}")
    await _check(request, p, b, disk_id)
    return p, _service(request), b, disk


@routes.get(BASE)
@allow("operator")
async def list_files(request: web.Request):
    path = request.query.get("path", "/")
    split_path(path)
    p, svc, b, disk = await _open(request)
    s = await svc.session(p.name, b, disk)
    items = await s.call("list", path)
    doc = {"backup_id": str(b.id), "disk_id": disk.disk_id, "path": path, "items": items}
    if not split_path(path) and s.failed:
        doc["unmountable"] = s.failed  # file systems found but not mountable, and why
    return json_response(doc)


def _disposition(name: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


@routes.get(BASE + "/content")
@allow("operator")
async def file_content(request: web.Request):
    path = request.query.get("path", "")
    if not split_path(path):
        raise v.Invalid("path must name a file")
    p, svc, b, disk = await _open(request)
    s = await svc.session(p.name, b, disk)
    async with s.hold():
        e = await s.call("stat_file", path)
        resp = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", "Content-Disposition": _disposition(e["name"]),
            "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600",
            "Last-Modified": _http_date(e["mtime"])})
        resp.content_length = e["size"]
        await resp.prepare(request)
        off = 0
        while off < e["size"]:
            data = await s.call("read", path, off)
            if not data:
                raise ConnectionResetError(f"{path} ended at {off} of {e['size']} bytes")
            data = data[:e["size"] - off]
            await resp.write(data)
            off += len(data)
        await resp.write_eof()
        return resp


def _http_date(iso: str | None) -> str:
    import datetime as dt
    from email.utils import format_datetime
    if not iso:
        return ""
    return format_datetime(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)


@routes.post(BASE + "/archive")
@allow("operator")
async def file_archive(request: web.Request):
    body = await v.json_body(request)
    v.no_unknown(body, {"paths"})
    paths = body.get("paths")
    if not isinstance(paths, list) or not paths or len(paths) > MAX_ARCHIVE_PATHS:
        raise v.Invalid(f"paths must be a non-empty list of at most {MAX_ARCHIVE_PATHS} paths")
    for x in paths:
        split_path(x)
    if len(set(paths)) != len(paths):
        raise v.Invalid("paths has duplicates")
    p, svc, b, disk = await _open(request)
    s = await svc.session(p.name, b, disk)
    async with s.hold():
        await s.call("check", paths)  # links, missing paths: a 4xx before the first byte
        last = split_path(paths[0])[-1:] or ["disk"]
        name = f"{b.vm_name or b.vm_id}-{str(b.id)[:8]}-{last[0] if len(paths) == 1 else 'files'}.tar.gz"
        resp = web.StreamResponse(headers={"Content-Type": "application/gzip",
                                           "Content-Disposition": _disposition(name),
                                           "X-Content-Type-Options": "nosniff"})
        await resp.prepare(request)
        # An error after the headers cuts the connection: the archive is visibly incomplete.
        # aclosing: a client that goes away stops the worker now, not when the generator is collected
        async with contextlib.aclosing(s.worker.tar(paths, svc.settings.search_max_entries)) as chunks:
            async for data in chunks:
                await resp.write(data)
        await resp.write_eof()
        return resp


async def _vm_backups(request):
    """The principal, service and the VM's succeeded backups (newest first) after the checks:
    the operator role, the VM visible, and the engine permits on its newest backup's disks."""
    p = require(request, "operator")
    vm_id = v.uuid_str(request.match_info["id"], "id")
    if not p.sees(vm_id):
        raise NotFound("VM", vm_id)
    svc = _service(request)
    page = await request.app[CATALOG].backups.list(vm_id=vm_id, status="succeeded",
                                                   limit=svc.settings.search_backups, with_disks=True)
    for b in page.items[:1]:
        await _check(request, p, b)
    return vm_id, svc, list(page.items)


def _indexing_url(vm_id: str) -> str:
    return f"/api/v1/vms/{vm_id}/files/indexing"


@routes.get("/api/v1/vms/{id}/files")
@allow("operator")
async def search_files(request: web.Request):
    require(request, "operator")
    pattern = check_pattern(request.query.get("name"))
    vm_id, svc, backups = await _vm_backups(request)
    doc = await svc.search(backups, pattern)
    if doc["indexing"] is not None:
        doc["indexing"]["url"] = _indexing_url(vm_id)
    return json_response({"vm_id": vm_id, "name": pattern, **doc})


def _round(vm_id: str, st: dict | None) -> dict:
    return {"vm_id": vm_id, "url": _indexing_url(vm_id),
            **(st or {"state": "idle", "done": 0, "total": 0, "failed": [], "pending": [],
                      "started_at": None, "finished_at": None})}


@routes.get("/api/v1/vms/{id}/files/indexing")
@allow("operator")
async def search_indexing(request: web.Request):
    vm_id, svc, _ = await _vm_backups(request)
    return json_response(_round(vm_id, svc.indexing(vm_id)))


@routes.delete("/api/v1/vms/{id}/files/indexing")
@allow("operator")
async def cancel_indexing(request: web.Request):
    vm_id, svc, _ = await _vm_backups(request)
    await svc.indexer.cancel(vm_id)
    return json_response(_round(vm_id, svc.indexing(vm_id)))
