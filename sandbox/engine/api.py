"""The engine simulator's HTTP face: oVirt REST API v4 (XML) and SSO.

Conventions of the real engine reproduced here (see docs/sandbox.md):
- SSO: `POST /ovirt-engine/sso/oauth/token` (password grant, JSON reply),
  `token-info`, `POST /ovirt-engine/services/sso-logout`; Basic auth also
  accepted on the API. A missing or unknown token gives 401.
- Adds answer 201 with the entity, actions answer 200 with `<action>`,
  DELETE answers 200 with no body, errors are `<fault>` documents.
- Non-admin users see only the VMs they were granted; the `Filter: true`
  header is accepted (and implied for them).
- `correlation_id` on any request tags the job and the events it creates.
"""
from __future__ import annotations

from aiohttp import web

from . import access, disks, infos, inventory, tags, templates, vm_devices, vms
from .http import (API, ENGINE, FAULTS, SSO, FaultRule, Faults, Sso, User, middleware)
from .model import ROLES, Cluster, NotFound, Permission, new_id  # noqa: F401  (for the lab admin API)
from .state import Engine

__all__ = ["create_app", "Sso", "User", "Faults", "FaultRule", "ENGINE", "SSO", "FAULTS"]

fallback = web.RouteTableDef()


@fallback.route("*", API + "/{tail:.*}")
async def unknown(request):
    raise NotFound(f"No such resource: {request.path}")



def create_app(engine: Engine, sso: Sso, faults: Faults) -> web.Application:
    app = web.Application(middlewares=[middleware], client_max_size=64 << 20)
    app[ENGINE] = engine
    app[SSO] = sso
    app[FAULTS] = faults
    # Resource routes first; the catch-all 404 last.
    for module in (inventory, vms, vm_devices, disks, access, tags, templates, infos):
        app.add_routes(module.routes)
    app.add_routes(fallback)
    return app
