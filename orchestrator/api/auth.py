"""Who is calling: `Authorization: Bearer <token>` on every route but health.

ovault API tokens (`ovault token create --role …`, stored hashed) carry a
role: viewer (read), operator (backup, restore, cancel), admin (targets,
webhooks, tokens, settings). oVirt SSO tokens are the service issue's work:
until then only API tokens are accepted.
"""
from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..errors import Forbidden, Unauthorized
from ..keys import CATALOG

ROLES = {"viewer": 0, "operator": 1, "admin": 2}
OPEN_PATHS = {"/healthz", "/readyz"}
PRINCIPAL = "principal"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    kind: str = "token"
    vm_ids: frozenset | None = None  # None: every VM (admins, API tokens)


@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path in OPEN_PATHS or request.method == "OPTIONS":
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise Unauthorized("missing bearer token")
    token = header[7:].strip()
    t = await request.app[CATALOG].tokens.verify(token)
    if t is None:
        raise Unauthorized("invalid, expired or revoked token")
    request[PRINCIPAL] = Principal(name=t.name, role=str(t.role))
    return await handler(request)


def require(request: web.Request, role: str) -> Principal:
    p: Principal = request[PRINCIPAL]
    if ROLES[p.role] < ROLES[role]:
        raise Forbidden(f"this needs the {role} role; your token has {p.role}")
    return p
