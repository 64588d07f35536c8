"""/api/v1/vms: the engine's VMs with their protection status.

The list comes from the service's inventory of the engine's VMs, kept current
from the engine's event log (orchestrator/inventory: a change the engine logs
shows within about a second, anything else within `policies.inventory_reconcile_seconds`);
a `search` and any moment the inventory is not current ask the engine itself. It
is filtered by the caller's VM visibility, which the engine answers for the
caller's own SSO token (api/sso.py); an SSO user never sees, and gets 404 for,
a VM the engine does not show them.
"""
from __future__ import annotations

import base64

from aiohttp import web

from ..errors import EngineError, NotFound
from ..keys import CATALOG, ENGINE
from . import validate as v
from ..policies.membership import VmRef, assign
from .auth import allow, require
from .policies import policy_service
from .views import iso, json_response

routes = web.RouteTableDef()


def _enum(x):
    return x.value if hasattr(x, "value") else x


async def _protection(request, vms, refs=None) -> dict:
    """vm_id -> ((status, policy), last backup, assignment) for engine VMs."""
    svc = policy_service(request.app)
    policies = await request.app[CATALOG].policies.list()
    a = assign(policies, refs if refs is not None else [VmRef.from_sdk(vm) for vm in vms])
    last = await request.app[CATALOG].policies.last_success_brief(vm.id for vm in vms)
    by_id = {x.id: x for x in policies}
    out = {}
    for vm in vms:
        b = last.get(vm.id)
        out[vm.id] = svc.protection(vm.id, a, by_id, b["created_at"] if b else None), b, a
    return out


def _policy_fields(svc, status, pol, a, vm_id) -> dict:
    nxt = svc.next_runs(pol, 1) if pol is not None else []
    return {"policy_id": str(pol.id) if pol is not None else None,
            "policy": pol.name if pol is not None else None,
            "next_run": nxt[0].isoformat() if nxt else None,
            "protection": status,
            "policy_conflict": [str(x) for x in a.conflicts.get(vm_id, [])]}


async def _view(request, vm, last=..., prot=None) -> dict:
    if prot is None:
        # one VM from the engine comes without its tags: take them from the inventory
        refs = [r for r in await policy_service(request.app).inventory(cached=True)
                if r.id == vm.id]
        (status, pol), last, a = (await _protection(request, [vm], refs or None))[vm.id]
    else:
        (status, pol), _, a = prot
    if last is ...:
        last = (await request.app[CATALOG].policies.last_success_brief([vm.id])).get(vm.id)
    return {**_policy_fields(policy_service(request.app), status, pol, a, vm.id),
            "id": vm.id, "name": vm.name, "status": _enum(vm.status),
            "host_id": vm.host.id if vm.host else None,
            "cluster_id": vm.cluster.id if vm.cluster else None,
            "memory": vm.memory, "protected": last is not None,
            "last_backup": None if last is None else {
                "id": str(last["id"]), "created_at": iso(last["created_at"]), "mode": last["mode"],
                "method": last["method"]}}


def _cursor_name(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise v.Invalid("bad page cursor") from None


@routes.get("/api/v1/vms")
@allow("viewer")
async def list_vms(request: web.Request):
    """Sorted by name; `search` is the engine's search language (`name=web*`)."""
    p = require(request, "viewer")
    q = request.query
    search = v.opt_str(q.get("search"), "search", 500)
    protected = v.query_bool(q.get("protected"), "protected")
    limit = v.limit(request, default=500)
    after = _cursor_name(q.get("cursor"))
    try:
        found = await policy_service(request.app).list_vms(search=search, cached=True)
    except EngineError as e:
        if getattr(e, "http_status", None) == 400:  # the engine could not parse the search
            raise v.Invalid(f"search: {e.reason}") from None
        raise
    vms = sorted((vm for vm in found if p.sees(vm.id)),
                 key=lambda vm: (vm.name or "", vm.id))
    if after is not None:
        vms = [vm for vm in vms if f"{vm.name or ''}\0{vm.id}" > after]
    out, nxt = [], None
    prot = await _protection(request, vms)
    for vm in vms:
        item = await _view(request, vm, prot[vm.id][1], prot[vm.id])
        if protected is not None and item["protected"] != protected:
            continue
        if len(out) == limit:
            last = out[-1]
            nxt = base64.urlsafe_b64encode(f"{last['name'] or ''}\0{last['id']}".encode()).decode().rstrip("=")
            break
        out.append(item)
    return json_response({"items": out, "next_cursor": nxt})


@routes.get("/api/v1/vms/{id}")
@allow("viewer")
async def get_vm(request: web.Request):
    p = require(request, "viewer")
    vm_id = str(v.path_uuid(request, "id"))
    if not p.sees(vm_id):
        raise NotFound("VM", vm_id)
    inv = policy_service(request.app).cache
    vm = inv.get(vm_id) if inv is not None and inv.fresh() else None
    if vm is None:
        vm = await request.app[ENGINE].get_vm(vm_id)
    return json_response(await _view(request, vm))
