"""/api/v1/jobs: list, inspect, cancel.

Machines of a running job carry `rate_bps` and `eta_seconds` (and so do their
disks), computed by the live hub's progress tracker (`live/progress.py`), the
one place ovault computes them."""
from __future__ import annotations

from aiohttp import web

from ..catalog import JobKind, JobState
from ..errors import NotFound
from ..keys import CATALOG, HUB
from . import validate as v
from . import views
from .views import json_response
from .auth import allow, require

routes = web.RouteTableDef()


def live_view(app: web.Application, j) -> dict:
    """The REST view of a job, with the current rates and ETAs of its machines."""
    out = views.job(j)
    hub = app.get(HUB)
    return hub.tracker.annotate(out) if hub is not None else out


def _visible(p, job) -> bool:
    return p.sees_job(job)


@routes.get("/api/v1/jobs")
@allow("viewer")
async def list_jobs(request: web.Request):
    p = require(request, "viewer")
    q = request.query
    state = v.enum(q.get("state"), "state", tuple(JobState))
    kind = v.enum(q.get("kind"), "kind", tuple(JobKind))
    vm_id = v.uuid_str(q["vm_id"], "vm_id") if "vm_id" in q else None
    # A restricted (SSO) user's jobs are chosen by the query itself, so pages are full.
    page = await request.app[CATALOG].jobs.list(kind=kind, state=state, vm_id=vm_id,
                                                limit=v.limit(request), cursor=q.get("cursor"),
                                                only_vms=p.vm_ids)
    return json_response({"items": [live_view(request.app, j) for j in page.items if _visible(p, j)],
                              "next_cursor": page.next_cursor})


async def _job(request, p):
    jid = v.path_uuid(request, "id")
    j = await request.app[CATALOG].jobs.get(jid)
    if not _visible(p, j):
        raise NotFound("job", jid)
    return j


@routes.get("/api/v1/jobs/{id}")
@allow("viewer")
async def get_job(request: web.Request):
    p = require(request, "viewer")
    return json_response(live_view(request.app, await _job(request, p)))


@routes.post("/api/v1/jobs/{id}/cancel")
@allow("operator")
async def cancel_job(request: web.Request):
    p = require(request, "operator")
    j = await _job(request, p)
    j = await request.app[CATALOG].jobs.request_cancel(j.id)
    await request.app[CATALOG].events.append("job.cancel_requested", {"job_id": str(j.id)}, job_id=j.id)
    return json_response(live_view(request.app, await request.app[CATALOG].jobs.get(j.id)), status=202)
