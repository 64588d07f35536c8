"""/api/v1/verify: queue a `verify` job (orchestrator/jobs/verify.py).

Admins only: a verify looks at (and reports on) every backup on the targets.
"""
from __future__ import annotations

import uuid

from aiohttp import web

from ..errors import NotFound
from ..keys import CATALOG, RUNNER
from . import validate as v
from . import views
from .views import json_response
from .auth import allow, require

routes = web.RouteTableDef()


@routes.post("/api/v1/verify")
@allow("admin")
async def start_verify(request: web.Request):
    """`{"backup_ids": [...]}` (optional; default: every backup on every target in use) →
    `202 {"job"}`. Each backup's result lands in the catalog (`damaged`) and a
    backup found damaged is announced once (`backup.damaged`)."""
    p = require(request, "admin")
    body = await v.json_body(request) if request.can_read_body else {}
    v.no_unknown(body, {"backup_ids"})
    ids = [v.uuid_str(b, "backup_ids[]") for b in v.str_list(body.get("backup_ids") or [], "backup_ids",
                                                             max_items=1000)]
    cat = request.app[CATALOG]
    vm_ids = []
    for bid in ids:
        b = await cat.backups.get(uuid.UUID(bid))  # NotFound: 404 naming it
        if b.status != "succeeded":
            raise NotFound("backup", bid)
        vm_ids.append(b.vm_id)
    job = await cat.policies.create_job("verify", {"backup_ids": ids, "vm_ids": sorted(set(vm_ids))},
                                        created_by=p.name)
    request.app[RUNNER].poke()
    return json_response({"job": views.job(job)}, status=202)
