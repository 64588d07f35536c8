"""The `ovault-mover` HTTP API (aiohttp application factory).

Routes (all JSON; errors are application/problem+json with a stable ``type``):

=======  ===========================  ==========================================
POST     /v1/copies                   start a backup or restore copy -> 202
GET      /v1/copies                   every known copy
GET      /v1/copies/{id}              one copy: state, progress, error, result
GET      /v1/copies/{id}/events       NDJSON stream until the copy ends
DELETE   /v1/copies/{id}              cancel -> 202 (200 if already over)
GET      /v1/health                   liveness; no token needed
=======  ===========================  ==========================================

Every route but health needs ``Authorization: Bearer <token>``, compared in
constant time with this host's own token (each host has its own; the
orchestrator keeps one per host), and, with ``client_ca``, a TLS client
certificate the orchestrator's CA signed (checked by the TLS layer).

A copy is accepted only if its ``store`` is one of ``allowed_stores`` and its
transfer URL is served by this host's imageio daemon (``imageio_url``, or the
local socket); a CA named in the request (``ca_file``) is refused: the mover
trusts the ``imageio_ca`` of its own configuration only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import socket

import structlog
from aiohttp import web

from ..copy import CopySpec, InvalidRequest
from ..errors import Forbidden, OvaultError
from ..store import StoreKey, StoreKeyInvalid
from ..store.ids import is_uuid
from ..version import version
from .config import MoverConfig
from .jobs import FINAL, JobManager

log = structlog.get_logger("ovault.mover")

CONFIG = web.AppKey("config", MoverConfig)
JOBS = web.AppKey("jobs", JobManager)

routes = web.RouteTableDef()


def problem(status: int, code: str, title: str, detail: str = "", **extra) -> web.Response:
    body = {"type": f"urn:ovault:mover:{code}", "title": title, "status": status, "detail": detail or title, **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def errors_mw(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except OvaultError as e:
        return problem(e.status, e.code, e.title, str(e))
    except Exception:
        log.exception("mover.request_failed", path=request.path)
        return problem(500, "internal_error", "Internal error", "see the mover log")


@web.middleware
async def auth_mw(request: web.Request, handler):
    if request.path == "/v1/health":
        return await handler(request)
    token = request.app[CONFIG].token.encode()
    got = request.headers.get("Authorization", "")
    scheme, _, value = got.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
        resp = problem(401, "unauthorized", "Unauthorized", "a valid bearer token is required")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="ovault-mover"'
        return resp
    return await handler(request)


def _job(request: web.Request):
    job = request.app[JOBS].get(request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text=json.dumps({"type": "urn:ovault:mover:not_found", "title": "Not found",
                                                "status": 404, "detail": f"no copy {request.match_info['id']}"}),
                               content_type="application/problem+json")
    return job


def _store_key(body) -> StoreKey | None:
    """The key of an encrypted store, sent by the orchestrator with each copy
    (inside this TLS connection): taken out of the request before anything
    else sees it, never stored with the job, logged or returned."""
    if not isinstance(body, dict) or "store_key" not in body:
        return None
    raw = body.pop("store_key")
    try:
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise StoreKeyInvalid("not a string")
        return StoreKey.from_hex(raw)
    except StoreKeyInvalid:
        raise InvalidRequest("store_key must be 64 hex digits") from None


@routes.post("/v1/copies")
async def create_copy(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("the body is not JSON") from None
    store_key = _store_key(body)
    spec = CopySpec.from_dict(body)
    cfg = request.app[CONFIG]
    if not cfg.store_allowed(spec.store):
        raise Forbidden(f"store {spec.store!r} is not one of this mover's allowed_stores")
    if spec.ca_file is not None:
        raise Forbidden("ca_file is refused: the mover trusts only the imageio_ca of its own configuration")
    why = cfg.transfer_refusal(spec.transfer_url)
    if why:
        raise Forbidden(f"transfer_url {spec.transfer_url!r} is refused: {why}")
    job_id = body.get("id")
    if job_id is not None and not (isinstance(job_id, str) and is_uuid(job_id.lower())):
        raise InvalidRequest("id must be a UUID")
    job, created = request.app[JOBS].create(spec, job_id.lower() if job_id else None, store_key=store_key)
    return web.json_response(job.to_dict(), status=202 if created else 200,
                             headers={"Location": f"/v1/copies/{job.id}"})


@routes.get("/v1/copies")
async def list_copies(request: web.Request) -> web.Response:
    return web.json_response({"copies": [j.to_dict() for j in request.app[JOBS].all()]})


@routes.get("/v1/copies/{id}")
async def get_copy(request: web.Request) -> web.Response:
    return web.json_response(_job(request).to_dict())


@routes.delete("/v1/copies/{id}")
async def cancel_copy(request: web.Request) -> web.Response:
    job = _job(request)
    if job.state in FINAL:
        return web.json_response(job.to_dict())
    request.app[JOBS].cancel(job)
    await asyncio.wait({job.task}, timeout=5)  # usually immediate: report the final state
    return web.json_response(job.to_dict(), status=202 if job.state not in FINAL else 200)


@routes.get("/v1/copies/{id}/events")
async def copy_events(request: web.Request) -> web.StreamResponse:
    """One JSON object per line: the copy's state now, on every change (at most
    every 0.5 s) and at least every ``events_interval``; ends after the final state."""
    job = _job(request)
    interval = request.app[CONFIG].events_interval
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    while True:
        changed = job.changed
        await resp.write(json.dumps(job.to_dict()).encode() + b"\n")
        if job.state in FINAL:
            break
        try:
            await asyncio.wait_for(changed.wait(), interval)
        except asyncio.TimeoutError:
            pass
    await resp.write_eof()
    return resp


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    counts = request.app[JOBS].counts()
    return web.json_response({
        "status": "ok",
        "version": version(),
        "host": socket.gethostname(),
        "copies_running": counts["running"],
        "copies_queued": counts["queued"],
        "max_copies": cfg.max_copies,
        "imageio_socket": bool(cfg.imageio_socket and (cfg.imageio_socket.startswith("\0")
                                                         or os.path.exists(cfg.imageio_socket))),
        # whether copies can go beside imageio (its control socket is here; docs/mover.md)
        "imageio_control_socket": bool(cfg.imageio_control_socket and (
            cfg.imageio_control_socket.startswith("\0") or os.path.exists(cfg.imageio_control_socket))),
    })


async def _jobs_ctx(app: web.Application):
    jobs = JobManager(app[CONFIG])
    app[JOBS] = jobs
    yield
    await jobs.close()


def create_app(config: MoverConfig) -> web.Application:
    app = web.Application(middlewares=[errors_mw, auth_mw], client_max_size=1 << 20)
    app[CONFIG] = config
    app.cleanup_ctx.append(_jobs_ctx)
    app.router.add_routes(routes)
    return app
