"""GET /api/v1/ws: live job, VM and disk progress over a websocket.

Client → server (JSON text frames):
- `{"type": "auth", "token": "…"}` — first message, when the upgrade request
  had no `Authorization` header (browsers cannot set one). Other messages
  before a successful auth close the socket with 4401; no auth within 10 s
  closes it with 4408.
- `{"type": "subscribe", "jobs": "*" | ["<job id>", …]}` — replaces the
  subscription; answered with `subscribed` and a `job.snapshot` per live job.
- `{"type": "unsubscribe"}`, `{"type": "ping"}` (answered with `pong`).

The token is checked again every `api.ws_recheck_seconds` (30 s; an SSO
token is then asked of the engine again, not taken from the cache): once it
is revoked or expired the socket is closed with 4401 ("token revoked or
expired"), and an SSO user's changed VM visibility applies from then on.

The message shapes sent back are in `live/messages.py` and docs/api.md.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import structlog
from aiohttp import WSMsgType, web

from .. import catalog as cat
from ..errors import OvaultError, Unauthorized
from ..keys import CATALOG, CONFIG, HUB, METRICS
from ..live import CLOSE_SEND_TIMEOUT, CLOSE_TOO_SLOW, Client
from .auth import PRINCIPAL, allow, authenticate, bearer, limiter
from .jobs import live_view

log = structlog.get_logger("ovault.api.ws")
routes = web.RouteTableDef()

AUTH_TIMEOUT = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_AUTH_TIMEOUT = 4408
MAX_SUBSCRIBED = 1000


def websocket(handler):
    handler.ovault_ws = True  # may authenticate with its first message
    return handler


@routes.get("/api/v1/ws")
@allow("viewer")
@websocket
async def ws_handler(request: web.Request):
    app = request.app
    cfg = app[CONFIG].api
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 << 10)
    await ws.prepare(request)
    principal = request.get(PRINCIPAL)
    token = bearer(request.headers.get("Authorization", ""))
    if principal is None:
        principal, token = await _first_message_auth(app, ws, request.remote or "unknown")
        if principal is None:
            return ws
    client = Client(principal, cfg.ws_queue)
    hub = app[HUB]
    hub.add(client)
    metrics = app.get(METRICS)
    if metrics:
        metrics.ws_clients.inc()
    sender = asyncio.create_task(_sender(ws, client, cfg.ws_send_timeout))
    recheck = asyncio.create_task(_recheck(app, ws, client, token, cfg.ws_recheck_seconds))
    await _send(client, {"type": "ready", "principal": {"name": principal.name, "role": principal.role,
                                                        "kind": principal.kind}})
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                doc = json.loads(msg.data)
                if not isinstance(doc, dict):
                    raise ValueError("a message is a JSON object")
            except ValueError as e:
                await _send(client, {"type": "error", "detail": f"bad message: {e}"})
                continue
            await _handle(app, client, doc)
            if sender.done():
                break
    finally:
        hub.remove(client)
        if metrics:
            metrics.ws_clients.dec()
        for t in (sender, recheck):
            t.cancel()
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if not ws.closed:
            await ws.close()
    return ws


async def _recheck(app, ws: web.WebSocketResponse, client: Client, token: str, interval: float) -> None:
    """Close the socket once its token stops being valid (revoked, expired,
    logged out); keep the principal current (an SSO user's VMs) meanwhile."""
    interval = max(1.0, interval)
    while not ws.closed:
        await asyncio.sleep(interval)
        try:
            client.principal = await authenticate(app, token, max_age=interval)
        except Unauthorized:
            log.info("websocket token no longer valid; closing", user=client.principal.name)
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"token revoked or expired")
            return
        except OvaultError as e:  # the catalog or the engine cannot answer now: try again later
            log.warning("websocket token re-check failed", user=client.principal.name, error=str(e))


async def _first_message_auth(app, ws, addr: str):
    """(principal, token), or (None, None) after closing the socket."""
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT)
    except asyncio.TimeoutError:
        await ws.close(code=CLOSE_AUTH_TIMEOUT, message=b"authentication timeout")
        return None, None
    token = None
    if msg.type == WSMsgType.TEXT:
        try:
            doc = json.loads(msg.data)
            if isinstance(doc, dict) and doc.get("type") == "auth" and isinstance(doc.get("token"), str):
                token = doc["token"].strip() or None
                if token and token.lower().startswith("bearer "):
                    token = bearer(token)
        except ValueError:
            pass
    if token is None:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"first message must be {\"type\":\"auth\",\"token\":...}")
        return None, None
    lim = limiter(app)
    if lim.retry_after(addr):
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"too many failed authentications")
        return None, None
    try:
        return await authenticate(app, token), token
    except Unauthorized as e:
        lim.failed(addr)
        await ws.close(code=CLOSE_UNAUTHORIZED, message=str(e).encode()[:120])
    except OvaultError as e:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=str(e).encode()[:120])
    return None, None


async def _send(client: Client, doc: dict) -> None:
    client.offer(json.dumps(doc, separators=(",", ":"), default=str), droppable=False)


async def _sender(ws: web.WebSocketResponse, client: Client, timeout: float) -> None:
    overflow = asyncio.ensure_future(client.overflowed.wait())
    get = None
    try:
        while True:
            get = asyncio.ensure_future(client.queue.get())
            done, _ = await asyncio.wait([get, overflow], return_when=asyncio.FIRST_COMPLETED)
            if overflow in done:
                log.warning("websocket client too slow; closing", user=client.principal.name)
                await ws.close(code=CLOSE_TOO_SLOW, message=b"too slow: reconnect and resubscribe")
                return
            try:
                await asyncio.wait_for(ws.send_str(get.result()), timeout)
            except asyncio.TimeoutError:
                await ws.close(code=CLOSE_SEND_TIMEOUT, message=b"send timeout")
                return
            except (ConnectionError, RuntimeError):
                return
    finally:
        overflow.cancel()
        if get is not None:
            get.cancel()


async def _handle(app, client: Client, doc: dict) -> None:
    kind = doc.get("type")
    if kind == "ping":
        await _send(client, {"type": "pong"})
    elif kind == "unsubscribe":
        client.jobs = set()
        await _send(client, {"type": "subscribed", "jobs": []})
    elif kind == "subscribe":
        jobs = doc.get("jobs")
        # The subscription takes effect, and `subscribed` is queued, before any
        # await: every update after it reaches the client. The snapshots are
        # read afterwards, so each is at least as new as what came before it.
        if jobs == "*":
            client.jobs = None
        elif isinstance(jobs, list) and len(jobs) <= MAX_SUBSCRIBED:
            try:
                ids = [str(uuid.UUID(str(j))) for j in jobs]
            except ValueError:
                await _send(client, {"type": "error", "detail": "jobs must be \"*\" or a list of job ids"})
                return
            client.jobs = set(ids)
        else:
            await _send(client, {"type": "error",
                                 "detail": f"jobs must be \"*\" or a list of at most {MAX_SUBSCRIBED} job ids"})
            return
        await _send(client, {"type": "subscribed", "jobs": "*" if client.jobs is None else sorted(client.jobs)})
        if client.jobs is None:
            snapshot = (await app[CATALOG].jobs.list(state=["queued", "running"], limit=100)).items
        else:
            snapshot = []
            for jid in sorted(client.jobs):
                try:
                    snapshot.append(await app[CATALOG].jobs.get(uuid.UUID(jid)))
                except cat.NotFound:
                    pass
        p = client.principal
        for j in snapshot:
            if p.sees_job(j):
                await _send(client, {"type": "job.snapshot", "job": live_view(app, j)})
    elif kind == "auth":
        await _send(client, {"type": "error", "detail": "already authenticated"})
    else:
        await _send(client, {"type": "error", "detail": f"unknown message type {str(kind)[:40]!r}"})
