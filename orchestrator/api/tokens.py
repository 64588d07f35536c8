"""/api/v1/tokens: ovault API tokens (admin), and /api/v1/me (anyone).

A new token never exceeds its creator: its role is at most the creator's, and
when the creator is itself an API token that expires, the new one expires no
later. Admin tokens created without `expires_in` expire after
`api.admin_token_days` (90 by default; 0: never).
"""
from __future__ import annotations

import datetime as dt

from aiohttp import web

from ..errors import Forbidden
from ..keys import CATALOG, CONFIG
from . import validate as v
from . import views_admin as views
from .views import json_response
from .auth import PRINCIPAL, ROLES, allow

routes = web.RouteTableDef()
NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.@\-]{0,99}$"
MAX_TTL = 10 * 365 * 86400


@routes.get("/api/v1/me")
@allow("viewer")
async def me(request: web.Request):
    p = request[PRINCIPAL]
    return json_response({"name": p.name, "role": p.role, "kind": p.kind,
                              "vm_ids": None if p.vm_ids is None else sorted(p.vm_ids)})


@routes.get("/api/v1/tokens")
@allow("admin")
async def list_tokens(request: web.Request):
    revoked = v.query_bool(request.query.get("include_revoked"), "include_revoked") or False
    ts = await request.app[CATALOG].tokens.list(include_revoked=revoked)
    return json_response({"items": [views.token(t) for t in ts], "next_cursor": None})


@routes.post("/api/v1/tokens")
@allow("admin")
async def create_token(request: web.Request):
    """The plain token is in the answer once, and never again."""
    body = await v.json_body(request)
    v.no_unknown(body, {"name", "role", "expires_in"})
    name = v.opt_str(body.get("name"), "name", 100, NAME)
    if name is None:
        raise v.Invalid("name is required")
    role = v.enum(body.get("role"), "role", ("viewer", "operator", "admin"))
    if role is None:
        raise v.Invalid("role is required")
    ttl = v.opt_int(body.get("expires_in"), "expires_in", 1, MAX_TTL)
    creator = request[PRINCIPAL]
    if ROLES[role] > ROLES[creator.role]:
        raise Forbidden(f"a token's role cannot exceed its creator's: you have {creator.role}, asked for {role}")
    now = dt.datetime.now(dt.timezone.utc)
    days = request.app[CONFIG].api.admin_token_days
    if ttl is None and role == "admin" and days > 0:
        ttl = int(days * 86400)
    expires = None if ttl is None else now + dt.timedelta(seconds=ttl)
    if creator.expires_at is not None and (expires is None or expires > creator.expires_at):
        expires = creator.expires_at  # never outlives the token that made it
    t, plain = await request.app[CATALOG].tokens.create(name, role, expires_at=expires)
    return json_response({**views.token(t), "token": plain}, status=201)


@routes.delete("/api/v1/tokens/{id}")
@allow("admin")
async def revoke_token(request: web.Request):
    t = await request.app[CATALOG].tokens.revoke(v.path_uuid(request, "id"))
    return json_response(views.token(t))
