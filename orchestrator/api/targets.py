"""/api/v1/targets: backup targets (read: viewer; change: admin).

This replica writes to the target named in its configuration (`active`);
only that one has live usage figures (`Store.stats()`, cached by the metrics
module because it walks the whole target). The active target cannot be
deleted or renamed from the API: the configuration owns it.

``encrypt`` (create only) asks for a store encrypted at rest when the target
is first used (recorded as ``options.encrypt``; docs/security.md): the key is
made on the appliance that initialises the store; it cannot be changed later.
"""
from __future__ import annotations

import re

from aiohttp import web

from ..errors import Conflict
from ..keys import STORE, CATALOG, CONFIG, METRICS, TARGET_ID
from . import validate as v
from . import views_admin as views
from .views import json_response
from .auth import allow

routes = web.RouteTableDef()
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
URL = re.compile(r"^(nfs://[A-Za-z0-9.\-\[\]:]+/[^\s?#]*|/[^\s\0]*)$")


def _url(raw) -> str:
    u = v.opt_str(raw, "url", 1024)
    if u is None or not URL.match(u) or "/../" in u + "/" or "/./" in u + "/":
        raise v.Invalid("url must be nfs://server/export/path or an absolute path without . or .. parts")
    return u


def _view(request, t):
    active = t.id == request.app[TARGET_ID]
    m = request.app.get(METRICS)
    if m and active:
        m.kick(request.app.get(STORE))  # figures for the next call when they are stale
    return views.target(t, active=active, stats=m.stats() if (m and active) else None)


@routes.get("/api/v1/targets")
@allow("viewer")
async def list_targets(request: web.Request):
    ts = await request.app[CATALOG].targets.list()
    return json_response({"items": [_view(request, t) for t in ts], "next_cursor": None})


@routes.post("/api/v1/targets")
@allow("admin")
async def create_target(request: web.Request):
    body = await v.json_body(request)
    v.no_unknown(body, {"name", "url", "options", "encrypt"})
    name = v.opt_str(body.get("name"), "name", 63, NAME)
    if name is None:
        raise v.Invalid("name is required")
    options = body.get("options", {})
    if not isinstance(options, dict) or len(options) > 50:
        raise v.Invalid("options must be an object")
    encrypt = body.get("encrypt", False)
    if not isinstance(encrypt, bool):
        raise v.Invalid("encrypt must be a boolean")
    if "encrypt" in options:
        raise v.Invalid("encrypt is a field of its own, not an option")
    if encrypt:
        options = {**options, "encrypt": True}
    t = await request.app[CATALOG].targets.create(name, _url(body.get("url")), options)
    return json_response(_view(request, t), status=201)


@routes.get("/api/v1/targets/{id}")
@allow("viewer")
async def get_target(request: web.Request):
    t = await request.app[CATALOG].targets.get(v.path_uuid(request, "id"))
    return json_response(_view(request, t))


@routes.patch("/api/v1/targets/{id}")
@allow("admin")
async def update_target(request: web.Request):
    tid = v.path_uuid(request, "id")
    body = await v.json_body(request)
    v.no_unknown(body, {"name", "url", "options"})
    t = await request.app[CATALOG].targets.get(tid)
    if t.id == request.app[TARGET_ID] and ("name" in body or "url" in body):
        raise Conflict("the active target's name and url come from the configuration (target.*)")
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise v.Invalid("options must be an object")
    if options is not None:
        if options.get("encrypt", False) != (t.options or {}).get("encrypt", False):
            raise v.Invalid("encryption is chosen when a target is created and cannot be changed")
    t = await request.app[CATALOG].targets.update(
        tid, name=v.opt_str(body.get("name"), "name", 63, NAME),
        url=_url(body["url"]) if "url" in body else None, options=options)
    return json_response(_view(request, t))


@routes.delete("/api/v1/targets/{id}")
@allow("admin")
async def delete_target(request: web.Request):
    tid = v.path_uuid(request, "id")
    if tid == request.app[TARGET_ID]:
        raise Conflict(f"target {tid} is the active target of {request.app[CONFIG].replica}")
    await request.app[CATALOG].targets.delete(tid)
    return web.Response(status=204)
