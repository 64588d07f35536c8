"""Who is calling: `Authorization: Bearer <token>` on every route but health.

Two kinds of token:

- ovault API tokens (`ovt_…`, `ovault token create --role …` or
  `POST /api/v1/tokens`, stored hashed) carry a role and see every VM; they
  serve scripts and monitoring.
- oVirt SSO tokens (what the Administration Portal gives its UI plugins),
  validated against the engine (`api/sso.py`, cached briefly). Engine admins
  get the admin role; every other engine user gets operator, limited to the
  VMs the engine shows them (`Principal.vm_ids`) and, per action, to what
  their engine roles' permits allow on the objects involved (`authz.py`). A
  VM outside that set is answered with 404, never 403, so its existence does
  not leak.

Failed authentications are limited per client address (`api/ratelimit.py`):
an address that failed too often is answered 429 before its token is looked
at, so neither the catalog nor the engine is asked.

Roles: viewer (read), operator (backup, restore, cancel), admin (targets,
webhooks, tokens, settings). Each handler declares its minimum role with
`@allow(role)`; the middleware enforces it before the handler runs, so a
route cannot forget its check (a route with no declaration needs admin).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from aiohttp import web

from ..catalog.tokens import PREFIX as API_TOKEN_PREFIX
from ..errors import Forbidden, Unauthorized
from ..keys import CATALOG, CONFIG, SSO
from . import problem
from .ratelimit import FailureLimiter

ROLES = {"viewer": 0, "operator": 1, "admin": 2}
OPEN_PATHS = {"/healthz", "/readyz"}
ROLE_ATTR = "ovault_role"
LIMITER = web.AppKey("auth_failure_limiter", FailureLimiter)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    kind: str = "token"  # "token" (ovault API token) or "sso" (oVirt engine user)
    vm_ids: frozenset | None = None  # None: every VM (admins, API tokens)
    engine_user_id: str | None = None  # SSO non-admins: the engine's id of the user
    expires_at: datetime | None = None  # API tokens: when the token stops working

    def sees(self, vm_id: str) -> bool:
        return self.vm_ids is None or vm_id.lower() in self.vm_ids

    def sees_job(self, job) -> bool:
        """A restricted user sees a job only when it has VMs and every one is
        theirs: jobs without machines (prune, gc) name other users' VMs and
        backups in their requests."""
        if self.vm_ids is None:
            return True
        return bool(job.machines) and all(self.sees(m.vm_id) for m in job.machines)


PRINCIPAL = web.RequestKey("principal", Principal)


def allow(role: str):
    """Declare a handler's minimum role (enforced by `auth_middleware`)."""
    if role not in ROLES:
        raise ValueError(role)

    def mark(handler):
        setattr(handler, ROLE_ATTR, role)
        return handler
    return mark


def declared_role(handler) -> str | None:
    return getattr(handler, ROLE_ATTR, None)


def bearer(header: str) -> str | None:
    if not header.startswith("Bearer "):
        return None
    return header[7:].strip() or None


def limiter(app: web.Application) -> FailureLimiter:
    lim = app.get(LIMITER)
    if lim is None:  # an app made without create_app (tools): defaults
        api = app[CONFIG].api
        lim = FailureLimiter(api.auth_failures_burst, api.auth_failures_per_minute)
    return lim


def too_many(retry_after: int) -> web.Response:
    r = problem.problem(429, "too-many-requests", "Too many failed authentications",
                        f"too many failed authentications from this address; retry in {retry_after} s",
                        code="too_many_requests")
    r.headers["Retry-After"] = str(retry_after)
    return r


async def authenticate(app: web.Application, token: str, *, max_age: float | None = None) -> Principal:
    """The principal behind a bearer token (also used by the websocket's auth
    message and its periodic re-check; `max_age` bounds how old a cached SSO
    answer may be)."""
    if token.startswith(API_TOKEN_PREFIX):
        t = await app[CATALOG].tokens.verify(token)
        if t is None:
            raise Unauthorized("invalid, expired or revoked token")
        return Principal(name=t.name, role=str(t.role), expires_at=t.expires_at)
    sso = app.get(SSO)
    if sso is None:
        user = None
    elif max_age is not None:
        user = await sso.verify(token, max_age=max_age)
    else:
        user = await sso.verify(token)
    if user is None:
        raise Unauthorized("invalid, expired or revoked token")
    return Principal(name=user.name, role="admin" if user.admin else "operator", kind="sso",
                     vm_ids=None if user.admin else user.vm_ids,
                     engine_user_id=None if user.admin else user.engine_user_id)


@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path in OPEN_PATHS or request.method == "OPTIONS":
        return await handler(request)
    token = bearer(request.headers.get("Authorization", ""))
    if token is None:
        # The websocket may authenticate with its first message instead (browsers
        # cannot set headers on a websocket); the handler enforces that.
        if (getattr(request.match_info.handler, "ovault_ws", False)
                and request.headers.get("Upgrade", "").lower() == "websocket"):
            return await handler(request)
        raise Unauthorized("missing bearer token")
    addr = request.remote or "unknown"
    lim = limiter(request.app)
    wait = lim.retry_after(addr)
    if wait:
        return too_many(wait)
    try:
        p = await authenticate(request.app, token)
    except Unauthorized:
        lim.failed(addr)
        raise
    request[PRINCIPAL] = p
    structlog.contextvars.bind_contextvars(user=p.name)
    if request.match_info.http_exception is None:
        check_role(p, declared_role(request.match_info.handler) or "admin")
    return await handler(request)


def check_role(p: Principal, role: str) -> None:
    if ROLES[p.role] < ROLES[role]:
        raise Forbidden(f"this needs the {role} role; you have {p.role}")


def require(request: web.Request, role: str) -> Principal:
    p: Principal = request[PRINCIPAL]
    check_role(p, role)
    return p
