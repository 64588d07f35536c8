"""/healthz (the process answers) and /readyz (database, engine, target)."""
from __future__ import annotations

import asyncio

from aiohttp import web

from ..keys import CATALOG, ENGINE, READY, STORE

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request):
    ready = request.app[READY]
    status = 200 if ready.get("started") else 503
    return web.json_response({"status": "ok" if status == 200 else "starting"}, status=status)


@routes.get("/readyz")
async def readyz(request: web.Request):
    checks = {}

    async def check(name, coro):
        try:
            await asyncio.wait_for(coro, 5)
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"failed: {type(e).__name__}: {e}"[:300]
    app = request.app
    await asyncio.gather(
        check("database", app[CATALOG].jobs.list(limit=1)),
        check("engine", app[ENGINE].list_clusters()),
        check("target", app[STORE].stats_quick() if hasattr(app[STORE], "stats_quick")
              else app[STORE].target.exists("ovault-store.json")))
    ok = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ok else "not ready", "checks": checks},
                             status=200 if ok else 503)
