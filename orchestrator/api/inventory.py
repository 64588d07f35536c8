"""/api/v1/clusters and /api/v1/storage-domains: the restore wizard's choices.

Names and ids only (what a viewer of the portal may see anyway); the engine is
asked through the service's connection.
"""
from __future__ import annotations

from aiohttp import web

from ..keys import ENGINE
from .auth import allow
from .views import json_response

routes = web.RouteTableDef()


def _enum(x):
    return x.value if hasattr(x, "value") else x


@routes.get("/api/v1/clusters")
@allow("viewer")
async def clusters(request: web.Request):
    items = await request.app[ENGINE].list_clusters()
    return json_response({"items": [{"id": c.id, "name": c.name} for c in items],
                              "next_cursor": None})


@routes.get("/api/v1/storage-domains")
@allow("viewer")
async def storage_domains(request: web.Request):
    items = await request.app[ENGINE].list_storage_domains()
    return json_response({"items": [
        {"id": s.id, "name": s.name, "type": _enum(s.type),
         "available_bytes": s.available, "used_bytes": s.used}
        for s in items if _enum(s.type) == "data"], "next_cursor": None})
