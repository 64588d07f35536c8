"""/api/v1/policies: automatic protection (schedule, members, retention), runs,
retention previews; protected backups and prune.

Roles: viewer reads; operator runs a policy now, protects/unprotects backups and
prunes; admin creates, edits and deletes policies.
"""
from __future__ import annotations

import uuid

from aiohttp import web

from .. import catalog as cat
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..keys import CATALOG, CONFIG, ENGINE, POLICIES, RUNNER, STORE
from ..policies.schedule import Schedule
from ..policies.service import PolicyService
from ..policies.spec import PolicySpec
from . import validate as v
from . import views
from .views import json_response
from .auth import allow, require
from .authz import Obj, authorizer, restricted

routes = web.RouteTableDef()


def policy_service(app: web.Application) -> PolicyService:
    """The service's PolicyService, or one over the app's resources."""
    svc = app.get(POLICIES)
    if svc is None:
        runner = app.get(RUNNER)
        svc = PolicyService(app[CATALOG], app[ENGINE], store=app.get(STORE),
                            poke=runner.poke if runner is not None else None)
    return svc


def default_timezone(request: web.Request) -> str:
    cfg = request.app.get(CONFIG)
    settings = getattr(cfg, "policies", None)
    return getattr(settings, "timezone", None) or "UTC"


def _fields(spec: PolicySpec) -> dict:
    d = spec.to_json()
    d["target_id"] = spec.target_id
    return d


async def _policy(request: web.Request) -> cat.Policy:
    return await request.app[CATALOG].policies.get(v.path_uuid(request, "id"))


async def _views(request: web.Request, policies: list[cat.Policy]) -> list[dict]:
    svc = policy_service(request.app)
    everything = await request.app[CATALOG].policies.list()
    a = await svc.assignment(everything)
    names = {p.id: p.name for p in everything}
    p = require(request, "viewer")
    out = []
    for pol in policies:
        view = await svc.view(pol, a, names)
        if p.vm_ids is not None:   # an SSO user sees only their VMs
            view["members"] = [m for m in view["members"] if p.sees(m["vm_id"])]
            view["excluded"] = [m for m in view["excluded"] if p.sees(m["vm_id"])]
            view["vm_ids"] = [x for x in view["vm_ids"] if p.sees(x)]
            view["conflicts"] = [x for x in view["conflicts"] if p.sees(x)]
        out.append(view)
    return out


@routes.post("/api/v1/policies")
@allow("admin")
async def create_policy(request: web.Request):
    p = require(request, "admin")
    spec = PolicySpec.from_json(await v.json_body(request),
                                default_timezone=default_timezone(request))
    if spec.target_id is not None:
        await request.app[CATALOG].targets.get(spec.target_id)
    try:
        pol = await request.app[CATALOG].policies.create(_fields(spec), created_by=p.name)
    except cat.Conflict:
        raise Conflict(f"a policy named {spec.name!r} exists already") from None
    policy_service(request.app).changed()
    [view] = await _views(request, [pol])
    return json_response(view, status=201)


@routes.get("/api/v1/policies")
@allow("viewer")
async def list_policies(request: web.Request):
    pols = await request.app[CATALOG].policies.list()
    return json_response({"items": await _views(request, pols)})


@routes.get("/api/v1/policies/next-runs")
@allow("viewer")
async def schedule_next_runs(request: web.Request):
    """`?schedule=&timezone=&count=`: a schedule's next fire times (UTC) before it is
    saved, validated like a policy's (the portal's schedule field shows them)."""
    q = request.query
    tz = q.get("timezone") or default_timezone(request)
    sched = Schedule.parse(q.get("schedule"), tz)
    count = v.opt_int(q.get("count"), "count", 1, 20) or 5
    return json_response({"schedule": sched.cron, "timezone": str(sched.tz.key),
                              "next_runs": [t.isoformat() for t in
                                            sched.next_times(policy_service(request.app).clock(),
                                                             count)]})


@routes.get("/api/v1/policies/{id}")
@allow("viewer")
async def get_policy(request: web.Request):
    [view] = await _views(request, [await _policy(request)])
    view["ticks"] = [_tick(t) for t in
                     await request.app[CATALOG].policies.ticks(uuid.UUID(view["id"]), limit=20)]
    return json_response(view)


def _tick(t: cat.Tick) -> dict:
    return {"fire_at": t.fire_at.isoformat(), "status": t.status, "reason": t.reason,
            "job_id": str(t.job_id) if t.job_id else None, "replica": t.replica,
            "details": t.details}


@routes.get("/api/v1/policies/{id}/ticks")
@allow("viewer")
async def policy_ticks(request: web.Request):
    pol = await _policy(request)
    ticks = await request.app[CATALOG].policies.ticks(pol.id, limit=v.limit(request, 50, 500))
    return json_response({"items": [_tick(t) for t in ticks]})


@routes.patch("/api/v1/policies/{id}")
@allow("admin")
async def edit_policy(request: web.Request):
    require(request, "admin")
    pol = await _policy(request)
    current = PolicySpec.from_json({**pol.fields(), "target_id": str(pol.target_id)
                                    if pol.target_id else None})
    spec = current.patched(await v.json_body(request))
    if spec.target_id is not None and spec.target_id != pol.target_id:
        await request.app[CATALOG].targets.get(spec.target_id)
    try:
        pol = await request.app[CATALOG].policies.update(pol.id, _fields(spec))
    except cat.Conflict:
        raise Conflict(f"a policy named {spec.name!r} exists already") from None
    policy_service(request.app).changed()
    [view] = await _views(request, [pol])
    return json_response(view)


@routes.delete("/api/v1/policies/{id}")
@allow("admin")
async def delete_policy(request: web.Request):
    """The policy's backups stay; its jobs lose the tag."""
    require(request, "admin")
    await request.app[CATALOG].policies.delete(v.path_uuid(request, "id"))
    policy_service(request.app).changed()
    return web.Response(status=204)


@routes.post("/api/v1/policies/{id}/run")
@allow("operator")
async def run_policy(request: web.Request):
    p = require(request, "operator")
    pol = await _policy(request)
    svc = policy_service(request.app)
    a = None
    if restricted(p):
        # running a policy backs up every member: the engine's backup permit on each
        a = await svc.assignment()
        az = authorizer(request.app)
        for m in a.members.get(pol.id, []):
            if not p.sees(m.vm_id):
                raise Forbidden(f"policy {pol.name} backs up VMs the engine does not show you")
            await az.require(p, "backup_disk", Obj("vm", m.vm_id, m.vm_name))
    res = await svc.run(pol, created_by=p.name, a=a)
    if not res.jobs:
        why = "; ".join(f"{k}: {r}" for k, r in sorted(res.skipped.items())) or "it has no members"
        raise Conflict(f"policy {pol.name} started nothing: {why}")
    return json_response({"job": views.job(res.jobs[0]),
                              "jobs": [views.job(j) for j in res.jobs],
                              "skipped": res.skipped}, status=202)


@routes.get("/api/v1/policies/{id}/preview")
@allow("viewer")
async def preview_policy(request: web.Request):
    p = require(request, "viewer")
    pol = await _policy(request)
    vm_id = request.query.get("vm_id")
    if vm_id is not None:
        vm_id = v.uuid_str(vm_id, "vm_id")
        if not p.sees(vm_id):
            raise NotFound("VM", vm_id)
    out = await policy_service(request.app).preview(pol, vm_id=vm_id)
    out["vms"] = [x for x in out["vms"] if p.sees(x["vm_id"])]
    return json_response(out)


@routes.patch("/api/v1/backups/{id}")
@allow("operator")
async def protect_backup(request: web.Request):
    """`{"protected": true|false}`: a protected backup is never pruned and cannot
    be deleted until unmarked."""
    p = require(request, "operator")
    bid = v.path_uuid(request, "id")
    body = await v.json_body(request)
    v.no_unknown(body, {"protected"})
    if not isinstance(body.get("protected"), bool):
        raise Invalid("protected must be true or false")
    c = request.app[CATALOG]
    b = await c.backups.get(bid)
    if not p.sees(b.vm_id) or b.status == "deleted":
        raise NotFound("backup", bid)
    await authorizer(request.app).require(p, "edit_vm_properties", Obj("vm", b.vm_id, b.vm_name))
    await c.policies.set_protected(bid, body["protected"])
    await c.events.append("backup.protection_changed",
                          {"backup_id": str(bid), "vm_id": b.vm_id,
                           "protected": body["protected"], "by": p.name})
    out = views.backup(await c.backups.get(bid))
    out["protected"] = body["protected"]
    return json_response(out)


@routes.post("/api/v1/prune")
@allow("operator")
async def prune(request: web.Request):
    """Apply each policy's retention to its members now (or to one VM): a dry run
    answers at once with what would go; otherwise `202` with the `prune` job."""
    p = require(request, "operator")
    body = await v.json_body(request)
    v.no_unknown(body, {"vm_id", "dry_run"})
    vm_id = v.uuid_str(body["vm_id"], "vm_id") if body.get("vm_id") is not None else None
    dry_run = v.opt_bool(body.get("dry_run"), "dry_run")
    if vm_id is not None and not p.sees(vm_id):
        raise NotFound("VM", vm_id)
    svc = policy_service(request.app)
    pols = {x.id: x for x in await request.app[CATALOG].policies.list()}
    a = await svc.assignment(pols.values())
    chosen, skipped = [], {}
    for pid, members in a.members.items():
        for m in members:
            if (vm_id is not None and m.vm_id.lower() != vm_id) or not p.sees(m.vm_id):
                continue
            if m.vm_id in a.conflicts:
                skipped[m.vm_id] = "in more than one policy; fix the policies first"
                continue
            chosen.append((m.vm_id, pols[pid]))
    if vm_id is not None and not chosen and vm_id not in skipped:
        raise Conflict(f"VM {vm_id} belongs to no policy: there is no retention to apply")
    if dry_run:
        results = [await svc.prune_vm(vm, pol, dry_run=True) for vm, pol in chosen]
        return json_response({"dry_run": True, "vms": results, "skipped": skipped})
    az = authorizer(request.app)
    for vm, _ in chosen:   # pruning deletes backups: operator rights on each VM
        await az.require(p, "edit_vm_properties", Obj("vm", vm))
    if not chosen:
        raise Conflict("no policy member to prune" + (f" ({len(skipped)} in conflict)"
                                                      if skipped else ""))
    job = await svc.request_prune(chosen, requested_by=p.name)
    return json_response({"job": views.job(job), "skipped": skipped}, status=202)
