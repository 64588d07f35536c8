"""/healthz (the process answers) and /readyz (database, engine, target).

Both are open (load balancers and probes carry no token), so they say no more
than "ok"/"starting" and "ready"/"not ready": which dependency failed, and
why, goes to the log (`readiness check failed`, with the check and the error),
never to an unauthenticated caller.
"""
from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from ..keys import CATALOG, ENGINE, READY, STORE
from .views import json_response

log = structlog.get_logger("ovault.api.health")
routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request):
    ready = request.app[READY]
    status = 200 if ready.get("started") else 503
    return json_response({"status": "ok" if status == 200 else "starting"}, status=status)


@routes.get("/readyz")
async def readyz(request: web.Request):
    failed = []

    async def check(name, coro):
        try:
            await asyncio.wait_for(coro, 5)
        except Exception as e:
            failed.append(name)
            log.warning("readiness check failed", check=name, error=f"{type(e).__name__}: {e}"[:300])
    app = request.app
    await asyncio.gather(
        check("database", app[CATALOG].jobs.list(limit=1)),
        check("engine", app[ENGINE].list_clusters()),
        check("target", app[STORE].stats_quick() if hasattr(app[STORE], "stats_quick")
              else app[STORE].target.exists("ovault-store.json")))
    ok = not failed
    return json_response({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)
