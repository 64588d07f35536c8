"""/api/v1/vms: the engine's VMs with their protection status."""
from __future__ import annotations

from aiohttp import web

from ..keys import CATALOG, ENGINE
from .auth import require
from .views import iso

routes = web.RouteTableDef()


def _enum(x):
    return x.value if hasattr(x, "value") else x


@routes.get("/api/v1/vms")
async def list_vms(request: web.Request):
    p = require(request, "viewer")
    vms = await request.app[ENGINE].list_vms(search=request.query.get("search"))
    out = []
    for vm in vms:
        if p.vm_ids is not None and vm.id not in p.vm_ids:
            continue
        last = await request.app[CATALOG].backups.last_succeeded(vm.id)
        out.append({"id": vm.id, "name": vm.name, "status": _enum(vm.status),
                    "host_id": vm.host.id if vm.host else None,
                    "cluster_id": vm.cluster.id if vm.cluster else None,
                    "memory": vm.memory, "protected": last is not None,
                    "last_backup": None if last is None else {
                        "id": str(last.id), "created_at": iso(last.created_at), "mode": last.mode,
                        "method": last.method}})
    return web.json_response({"items": out})
