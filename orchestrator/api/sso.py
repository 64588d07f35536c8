"""oVirt SSO tokens: who the caller is and which VMs the engine shows them.

The Administration Portal hands its UI plugins the user's SSO token; the
plugin sends it to us as `Authorization: Bearer <token>`. We ask the engine:

- `POST /ovirt-engine/sso/oauth/token-info` (form `token=`) → `active`,
  `user_id` (`name@domain`) and `ovirt.admin`;
- for a non-admin, `GET /ovirt-engine/api/vms` *with the user's own token*
  and `Filter: true`: the engine answers with exactly the VMs that user may
  see (user-level permissions), so that set is the user's VM visibility;
  and `GET /ovirt-engine/api` the same way, whose `authenticated_user` is the
  user's engine id (a VM they restore is granted to them by that id).

Both answers are cached for `api.sso_cache_seconds` under the SHA-256 of the
token (never the token itself), so a revoked/logged-out token or a changed
permission is noticed within that time. Invalid tokens are cached for a few
seconds too, so a client retrying a bad token cannot hammer the engine.
"""
from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import aiohttp
import structlog

from ..errors import EngineUnavailable

log = structlog.get_logger("ovault.api.sso")

NEGATIVE_SECONDS = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class SsoUser:
    name: str
    principal_id: str
    admin: bool
    vm_ids: frozenset | None  # None: every VM (admins)
    engine_user_id: str | None = None  # the engine's id of this user (non-admins: to grant roles)


class SsoVerifier:
    def __init__(self, api_url: str, *, ca_file: str = "", insecure: bool = False,
                 cache_seconds: float = 60.0, timeout: float = 15.0):
        # cfg.engine.url is https://engine/ovirt-engine/api
        self.api_url = api_url.rstrip("/")
        base = self.api_url
        if base.endswith("/api"):
            base = base[: -len("/api")]
        self.sso_url = base + "/sso/oauth/token-info"
        self.cache_seconds = cache_seconds
        if insecure:
            self._ssl: ssl.SSLContext | bool = False
        else:
            self._ssl = ssl.create_default_context(cafile=ca_file or None)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[bytes, tuple[float, SsoUser | None, float]] = {}  # (expiry, user, asked at)
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._generation = 0

    def forget(self) -> None:
        """Drop every cached answer (the engine logged a permission or VM change:
        users' visible VMs may differ); an answer being asked meanwhile is not kept."""
        self._generation += 1
        self._cache.clear()

    async def close(self):
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=20), timeout=self._timeout)
        return self._session

    async def verify(self, token: str, *, max_age: float | None = None) -> SsoUser | None:
        """The engine's user behind `token`, or None if the engine does not know it.

        `max_age`: a cached answer older than this many seconds is asked again
        (the websocket's re-check, so a logged-out token closes it promptly)."""
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now and (max_age is None or now - hit[2] <= max_age):
            return hit[1]
        # Concurrent requests with one new token ask the engine once.
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        gen = self._generation
        try:
            user = await self._ask(token)
            ttl = self.cache_seconds if user else NEGATIVE_SECONDS
            if len(self._cache) >= MAX_ENTRIES:
                self._evict(now)
            at = time.monotonic()
            if gen == self._generation:
                self._cache[key] = (at + ttl, user, at)
            fut.set_result(user)
            return user
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._inflight[key]

    def _evict(self, now: float):
        for k in [k for k, (exp, _, _) in self._cache.items() if exp <= now]:
            del self._cache[k]
        while len(self._cache) >= MAX_ENTRIES:
            self._cache.pop(next(iter(self._cache)))

    async def _ask(self, token: str) -> SsoUser | None:
        http = self._http()
        try:
            async with http.post(self.sso_url, data={"token": token},
                                 headers={"Accept": "application/json"}) as r:
                if r.status >= 500:
                    raise EngineUnavailable(f"SSO token-info answered HTTP {r.status}")
                info = await r.json(content_type=None) if r.status == 200 else {}
            if not info.get("active"):
                return None
            ovirt = info.get("ovirt") or {}
            name = str(info.get("user_id") or ovirt.get("user_id") or "unknown")
            admin = bool(ovirt.get("admin"))
            vm_ids = None if admin else await self._visible_vms(token)
            engine_user_id = None if admin else await self._engine_user_id(token)
            log.info("sso user verified", user=name, admin=admin,
                     vms=None if vm_ids is None else len(vm_ids))
            return SsoUser(name=name, principal_id=str(ovirt.get("principal_id") or ""),
                           admin=admin, vm_ids=vm_ids, engine_user_id=engine_user_id)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            raise EngineUnavailable(f"cannot validate the SSO token with the engine: "
                                    f"{type(e).__name__}: {e}") from e

    async def _engine_user_id(self, token: str) -> str | None:
        """The API root's `authenticated_user` as the user sees it: the id the
        engine's permissions name this user by."""
        async with self._http().get(self.api_url,
                                    headers={"Authorization": f"Bearer {token}",
                                             "Accept": "application/xml", "Filter": "true",
                                             "Version": "4"}) as r:
            if r.status >= 400:
                return None
            body = await r.read()
        u = ET.fromstring(body).find("authenticated_user")
        return u.get("id") if u is not None else None

    async def _visible_vms(self, token: str) -> frozenset | None:
        """The ids of the VMs the engine shows this user; None if the token is refused."""
        async with self._http().get(self.api_url + "/vms",
                                    headers={"Authorization": f"Bearer {token}",
                                             "Accept": "application/xml", "Filter": "true",
                                             "Version": "4"}) as r:
            if r.status in (401, 403):
                return frozenset()
            if r.status >= 400:
                raise EngineUnavailable(f"listing the user's VMs: HTTP {r.status}")
            body = await r.read()
        root = ET.fromstring(body)
        return frozenset(vm.get("id").lower() for vm in root.findall("vm") if vm.get("id"))
