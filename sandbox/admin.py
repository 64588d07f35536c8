"""The sandbox admin API (not part of oVirt), under `/sandbox` on the engine's port.

- `POST /sandbox/vms/{vm_id}/writes` guest writes into a disk's active layer
- `POST /sandbox/vms/{vm_id}/files` a file in the root file system of a VM that runs a real
  guest (through its guest agent when up, a maintenance boot when down)
- `GET  /sandbox/vms/{vm_id}/guest` the running guest's sockets and disk node names
- `GET  /sandbox/disks/{disk_id}/digest` SHA-256 of the guest-visible content
- `POST /sandbox/faults` engine errors/latency, imageio kill/restart, NFS stop/start,
  checkpoint invalidation; `GET`/`DELETE /sandbox/faults[/{id}]`
- `GET  /sandbox/leftovers` what a backup product may have left behind
- `POST /sandbox/users` an SSO user, optionally non-admin with chosen VMs, optionally only
  in the directory (`engine_user: false`: added to the engine later with `POST /users`)
It answers JSON and is meant for loopback use by tests and the demo.
"""
from __future__ import annotations

import base64
import binascii
import uuid

from aiohttp import web

from .engine import api as engine_api
from .engine.model import ACTIVE_PHASES, EngineError

routes = web.RouteTableDef()
LAB = web.AppKey("lab", object)


def _bad(msg, status=400):
    return web.json_response({"error": msg}, status=status)


@web.middleware
async def errors(request, handler):
    if not request.path.startswith("/sandbox"):
        return await handler(request)
    try:
        return await handler(request)
    except EngineError as e:
        return _bad(e.detail, e.status)
    except (KeyError, ValueError, TypeError) as e:
        return _bad(f"invalid request: {e}")


@routes.post("/sandbox/vms/{vm_id}/writes")
async def writes(request):
    lab = request.app[LAB]
    e = lab.engine
    vm = e.vm(request.match_info["vm_id"])
    body = await request.json()
    disk_id = body.get("disk_id") or next(
        (a.disk_id for a in vm.attachments if a.bootable), vm.attachments[0].disk_id)
    if disk_id not in {a.disk_id for a in vm.attachments}:
        return _bad(f"disk {disk_id} is not attached to VM {vm.id}", 404)
    d = e.disks[disk_id]
    off, length = int(body["offset"]), int(body["length"])
    if off < 0 or length <= 0 or off + length > d.provisioned_size:
        return _bad("write outside the disk")
    pattern = body.get("pattern", 0)
    if pattern != "random" and not (0 <= int(pattern) <= 255):
        return _bad("pattern must be 0-255 or 'random'")
    if d.locked_by and d.status == "locked":
        return _bad(f"disk {disk_id} is locked by image transfer {d.locked_by}", 409)
    g = e.guests.get(vm.id) if e.guests is not None else None
    if g is not None:  # a running guest holds the image: write through its qemu
        await _guest_write(g, d, off, length, pattern, body.get("seed"))
    else:
        await d.image.write(off, length, pattern, body.get("seed"))
    return web.json_response({"vm_id": vm.id, "disk_id": disk_id, "offset": off, "length": length})


async def _guest_write(g, d, off: int, length: int, pattern, seed):
    import random
    import tempfile
    piece = 64 << 20
    rnd = random.Random(seed)
    for o in range(off, off + length, piece):
        n = min(piece, off + length - o)
        if pattern == "random":
            with tempfile.NamedTemporaryFile(dir=d.image.dir, prefix=".w") as f:
                f.write(rnd.randbytes(n))
                f.flush()
                await g.write_disk(d.id, o, n, data_file=f.name)
        else:
            await g.write_disk(d.id, o, n, pattern=int(pattern))


@routes.post("/sandbox/vms/{vm_id}/files")
async def files_write(request):
    """`{"path", "content_b64"}`: a file in the VM's root file system (parents created)."""
    e = request.app[LAB].engine
    vm = e.vm(request.match_info["vm_id"])
    body = await request.json()
    from .guests.manager import check_guest_path
    from .guests.runner import GuestError
    path = check_guest_path(body["path"])
    try:
        data = base64.b64decode(body["content_b64"], validate=True)
    except (binascii.Error, TypeError):
        return _bad("content_b64 is not base64")
    if e.guests is None or not e.guests.is_guest(vm):
        return _bad(f"VM {vm.name} runs no guest operating system (a record-only VM)", 409)
    if vm.status not in ("up", "down"):
        return _bad(f"VM {vm.name} is {vm.status}", 409)
    for a in vm.attachments:
        dk = e.disks.get(a.disk_id)
        if a.bootable and dk is not None and dk.status == "locked":
            return _bad(f"disk {dk.id} is locked", 409)
    try:
        how = await e.guests.write_file(vm, path, data)
    except GuestError as ex:
        return _bad(str(ex), 409)
    return web.json_response({"vm_id": vm.id, "path": path, "size": len(data), "via": how})


@routes.get("/sandbox/vms/{vm_id}/guest")
async def guest_info(request):
    e = request.app[LAB].engine
    vm = e.vm(request.match_info["vm_id"])
    g = e.guests.get(vm.id) if e.guests is not None else None
    if g is None:
        return _bad(f"VM {vm.name} has no running guest", 404)
    return web.json_response({**g.handle(), "boot_seconds": g.boot_seconds})


@routes.get("/sandbox/disks/{disk_id}/digest")
async def digest(request):
    e = request.app[LAB].engine
    d = e.disk(request.match_info["disk_id"])
    vol = request.query.get("snapshot")
    return web.json_response(await d.image.digest(vol))


@routes.get("/sandbox/faults")
async def faults_list(request):
    lab = request.app[LAB]
    return web.json_response([r.__dict__ for r in lab.faults.rules])


@routes.delete("/sandbox/faults")
async def faults_clear(request):
    request.app[LAB].faults.rules.clear()
    return web.json_response({"cleared": True})


@routes.delete("/sandbox/faults/{id}")
async def fault_remove(request):
    lab = request.app[LAB]
    lab.faults.rules = [r for r in lab.faults.rules if r.id != request.match_info["id"]]
    return web.json_response({"removed": request.match_info["id"]})


@routes.post("/sandbox/faults")
async def faults_add(request):
    lab = request.app[LAB]
    b = await request.json()
    kind = b.get("kind", "engine")
    if kind == "engine":
        r = engine_api.FaultRule(str(uuid.uuid4()), b.get("method", "*").upper(), b["path"],
                                 b.get("status"), float(b.get("delay", 0)), b.get("count"),
                                 b.get("detail", "Injected fault"))
        if r.status is None and not r.delay:
            return _bad("an engine fault needs a status or a delay")
        lab.faults.rules.append(r)
        return web.json_response(r.__dict__, status=201)
    if kind == "imageio":
        h = lab.engine.host(b["host_id"])
        if b["action"] == "kill":
            await h.daemon.kill()
        elif b["action"] == "restart":
            await h.daemon.stop()
            await h.daemon.start()
        else:
            return _bad("imageio action is kill or restart")
        return web.json_response({"host_id": h.id, "running": h.daemon.running})
    if kind == "nfs":
        if lab.nfs is None:
            return _bad("this sandbox has no NFS server", 409)
        if b["action"] == "stop":
            await lab.nfs.stop(keep_lock=True)
        elif b["action"] == "start":
            await lab.nfs.start()
        else:
            return _bad("nfs action is stop or start")
        return web.json_response({"nfs": b["action"]})
    if kind == "checkpoint":
        await lab.engine.invalidate_checkpoint(b["vm_id"], b["checkpoint_id"])
        return web.json_response({"invalidated": b["checkpoint_id"]})
    return _bad(f"unknown fault kind {kind!r}")


@routes.get("/sandbox/leftovers")
async def leftovers(request):
    """Everything a backup product should not leave behind."""
    e = request.app[LAB].engine
    return web.json_response({
        "snapshots": [{"vm_id": v.id, "id": s.id, "description": s.description, "status": s.status}
                      for v in e.vms.values() for s in v.snapshots],
        "backups": [{"vm_id": v.id, "id": b.id, "phase": b.phase}
                    for v in e.vms.values() for b in v.backups
                    if b.phase not in ("succeeded", "failed")],
        "transfers": [{"id": t.id, "phase": t.phase, "disk_id": t.disk_id}
                      for t in e.transfers.values() if t.phase in ACTIVE_PHASES],
        "locked_disks": [d.id for d in e.disks.values() if d.status != "ok"],
        "busy_vms": [v.id for v in e.vms.values() if v.busy],
    })


PERMISSION_OBJECTS = {"vm_id": ("vm", "vms"), "cluster_id": ("cluster", "clusters"),
                      "storage_domain_id": ("storage_domain", "sds"),
                      "data_center_id": ("data_center", "dcs"), "disk_id": ("disk", "disks")}


def _permissions(e, b: dict, user_id: str) -> list:
    """The user's permissions from the request: `permissions` [{role, <object>_id}] (no
    object: the system) and `vm_ids`, a shorthand for UserRole on each VM."""
    wanted = [{"role": "UserRole", "vm_id": v} for v in b.get("vm_ids", [])]
    extra = b.get("permissions", [])
    if not isinstance(extra, list):
        raise ValueError("permissions must be a list")
    out = []
    for x in wanted + extra:
        if not isinstance(x, dict) or x.get("role") not in engine_api.ROLES:
            raise ValueError(f"unknown role in {x!r}; roles: {sorted(engine_api.ROLES)}")
        keys = [k for k in x if k != "role"]
        if len(keys) > 1 or (keys and keys[0] not in PERMISSION_OBJECTS):
            raise web.HTTPBadRequest(text=f"{x!r}: name one of {sorted(PERMISSION_OBJECTS)} (or "
                                          "none: the system)")
        otype, oid = "system", None
        if keys:
            otype, table = PERMISSION_OBJECTS[keys[0]]
            oid = str(x[keys[0]])
            if oid not in getattr(e, table):
                raise ValueError(f"{x!r}: no such {otype}")
        out.append(engine_api.Permission(engine_api.new_id(), x["role"], user_id, otype, oid))
    return out


@routes.post("/sandbox/users")
async def users_add(request):
    """A directory user (`engine_user`: also added to the engine), an admin or
    not, holding the given permissions."""
    lab = request.app[LAB]
    b = await request.json()
    u = engine_api.User(b["name"], b["password"], admin=bool(b.get("admin", False)),
                        engine_user=bool(b.get("engine_user", True)))
    perms = _permissions(lab.engine, b, u.id)
    lab.sso.users[u.name] = u
    lab.engine.permissions.extend(perms)
    return web.json_response({"id": u.id, "name": u.name, "admin": u.admin,
                              "engine_user": u.engine_user,
                              "permissions": [{"id": p.id, "role": p.role, "object_type": p.object_type,
                                               "object_id": p.object_id} for p in perms]},
                             status=201)


@routes.post("/sandbox/clusters")
async def clusters_add(request):
    """`{"name"}`: one more cluster (no hosts) in the data center, e.g. a place a
    user may not create VMs in; removed with DELETE."""
    e = request.app[LAB].engine
    b = await request.json()
    name = str(b["name"])
    if any(c.name == name for c in e.clusters.values()):
        raise ValueError(f"a cluster named {name!r} exists")
    dc_id = next(iter(e.dcs))
    cl = engine_api.Cluster(engine_api.new_id(), name, dc_id)
    e.clusters[cl.id] = cl
    return web.json_response({"id": cl.id, "name": cl.name, "data_center_id": dc_id}, status=201)


@routes.delete("/sandbox/clusters/{id}")
async def clusters_remove(request):
    e = request.app[LAB].engine
    cid = request.match_info["id"]
    if cid not in e.clusters or any(v.cluster_id == cid for v in e.vms.values()) \
            or any(h.cluster_id == cid for h in e.hosts.values()):
        raise ValueError(f"cluster {cid}: unknown, or has VMs or hosts")
    del e.clusters[cid]
    e.permissions = [p for p in e.permissions if (p.object_type, p.object_id) != ("cluster", cid)]
    return web.json_response({"removed": cid})


def install(app: web.Application, lab):
    app[LAB] = lab
    app.middlewares.append(errors)
    # The engine's catch-all must stay last: put the admin routes before it.
    app.router.add_routes(routes)
