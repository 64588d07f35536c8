"""Exposure at the HTTP edge: token expiry and creator limits, the failed-
authentication limit per address, the websocket's token re-check."""
from __future__ import annotations

import asyncio
import time
import datetime as dt
import uuid

from orchestrator.api import ws as ws_api
from orchestrator.api.auth import LIMITER, authenticate
from orchestrator.api.sso import SsoUser
from orchestrator.keys import CONFIG
from orchestrator.live import Client


def _utc(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


async def test_admin_tokens_expire_by_default_and_others_when_asked(api):
    now = dt.datetime.now(dt.timezone.utc)
    status, _, t = await api.call("POST", "/api/v1/tokens", json={"name": "ops", "role": "admin"})
    assert status == 201, t
    left = _utc(t["expires_at"]) - now
    assert dt.timedelta(days=89, hours=23) < left <= dt.timedelta(days=90, minutes=1)
    _, _, v = await api.call("POST", "/api/v1/tokens", json={"name": "mon", "role": "viewer"})
    assert v["expires_at"] is None  # a viewer token for monitoring may live on
    api.app[CONFIG].api.admin_token_days = 0
    _, _, forever = await api.call("POST", "/api/v1/tokens", json={"name": "ops2", "role": "admin"})
    assert forever["expires_at"] is None
    _, _, short = await api.call("POST", "/api/v1/tokens", json={"name": "ops3", "role": "admin", "expires_in": 60})
    assert _utc(short["expires_at"]) - now < dt.timedelta(minutes=2)


async def test_a_token_never_outlives_or_outranks_its_creator(api):
    made, plain = await api.catalog.tokens.create(
        "short-admin", "admin", expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    status, _, t = await api.call("POST", "/api/v1/tokens", token=plain,
                                  json={"name": "child", "role": "operator", "expires_in": 30 * 86400})
    assert status == 201 and _utc(t["expires_at"]) == made.expires_at
    # a creator below admin cannot mint tokens at all, and never above its role
    operator = await api.token("operator")
    status, _, body = await api.call("POST", "/api/v1/tokens", token=operator, json={"name": "x", "role": "admin"})
    assert status == 403 and "admin role" in body["detail"]
    api.sso.users["sso-admin"] = SsoUser(name="admin@internal", principal_id="p0", admin=True, vm_ids=None)
    status, _, t = await api.call("POST", "/api/v1/tokens", token="sso-admin", json={"name": "y", "role": "admin"})
    assert status == 201 and t["role"] == "admin"


async def test_failed_authentication_is_limited_per_address_before_any_lookup(api):
    lim = api.app[LIMITER]
    good = await api.token("viewer")
    for _ in range(lim.burst):
        assert (await api.call("GET", "/api/v1/me", token="guess-" + uuid.uuid4().hex))[0] == 401
    asked = len(api.sso.asked)
    async with api.client.get("/api/v1/me", headers={"Authorization": "Bearer guess-more"}) as r:
        assert r.status == 429 and r.content_type == "application/problem+json"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        body = await r.json(content_type=None)
    assert body["status"] == 429 and "too many failed authentications" in body["detail"]
    assert len(api.sso.asked) == asked  # the engine was not asked
    # even a good token waits: the address is limited, not the token
    assert (await api.call("GET", "/api/v1/me", token=good))[0] == 429
    assert (await api.call("GET", "/healthz", token=None))[0] == 200  # health stays open
    lim.clock = lambda: time.monotonic() + 3600  # an hour later: the bucket refilled
    assert (await api.call("GET", "/api/v1/me", token=good))[0] == 200


def test_successes_are_never_limited():
    from orchestrator.api.ratelimit import FailureLimiter
    t = [0.0]
    lim = FailureLimiter(3, 6, clock=lambda: t[0])  # 3 at once, then one per 10 s
    for _ in range(3):
        assert lim.retry_after("a") == 0
        lim.failed("a")
    assert lim.retry_after("a") == 10 and lim.retry_after("b") == 0
    t[0] = 10.0
    assert lim.retry_after("a") == 0
    lim.failed("a")
    assert lim.retry_after("a") == 10


class FakeSocket:
    """What _recheck uses of a WebSocketResponse."""

    def __init__(self):
        self.closed, self.code, self.message = False, None, None

    async def close(self, code=1000, message=b""):
        self.closed, self.code, self.message = True, code, message


async def test_the_websocket_closes_soon_after_its_token_is_revoked(api):
    t, plain = await api.catalog.tokens.create("watcher", "viewer")
    p = await authenticate(api.app, plain)
    ws, client = FakeSocket(), Client(p, 8)
    task = asyncio.create_task(ws_api._recheck(api.app, ws, client, plain, 1.0))
    await asyncio.sleep(1.5)
    assert not ws.closed  # still valid: left open
    await api.catalog.tokens.revoke(t.id)
    async with asyncio.timeout(5):
        await task
    assert (ws.closed, ws.code, ws.message) == (True, 4401, b"token revoked or expired")


async def test_the_websocket_closes_when_its_token_expires(api):
    _, plain = await api.catalog.tokens.create(
        "brief", "viewer", expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5))
    ws, client = FakeSocket(), Client(await authenticate(api.app, plain), 8)
    async with asyncio.timeout(6):
        await ws_api._recheck(api.app, ws, client, plain, 1.0)
    assert ws.code == 4401


async def test_the_websocket_rechecks_sso_tokens_with_the_engine(api):
    mine = api.engine.add_vm("mine")
    api.sso.users["sso"] = SsoUser(name="u@internal", principal_id="p", admin=False,
                                   vm_ids=frozenset({mine}), engine_user_id="u-1")
    ws, client = FakeSocket(), Client(await authenticate(api.app, "sso"), 8)
    task = asyncio.create_task(ws_api._recheck(api.app, ws, client, "sso", 1.0))
    await asyncio.sleep(1.5)
    assert ("sso", 1.0) in api.sso.asked  # the cache is bypassed when older than the interval
    api.sso.users["sso"] = SsoUser(name="u@internal", principal_id="p", admin=False,
                                   vm_ids=frozenset(), engine_user_id="u-1")
    await asyncio.sleep(1.2)
    assert client.principal.vm_ids == frozenset()  # changed visibility applies to the live feed
    del api.sso.users["sso"]  # logged out
    async with asyncio.timeout(5):
        await task
    assert ws.code == 4401
