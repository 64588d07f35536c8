"""What a non-admin engine (SSO) user may do, per action and per object, as the
engine's roles and permits say.

A permit (the engine's action group: `backup_disk`, `create_vm`, …) applies to
an object when the user holds a role that carries it on the object or on one
above it in the engine's tree: a VM's cluster, data center and the system; a
storage domain's data center(s); a disk's storage domain, the VM it belongs to
(and that VM's cluster and data center). ovault reads the user's permissions
(`/users/{id}/permissions`: the engine includes those held through the user's
groups and Everyone) and the roles' permits (`/roles/{id}/permits`)
with its own engine account, and the tree from the engine's inventory; the
answers are cached for `api.sso_cache_seconds` (roles' permits for longer:
predefined roles never change).

Who is checked: SSO users who are not engine admins (`Principal.engine_user_id`).
ovault API tokens keep their roles and engine admins may do everything, as in
the engine. A refusal is a 403 problem+json naming the missing permit and the
object (`permit`, `object_type`, `object_id`). The mapping of ovault's actions
to permits is in docs/security.md ("Authorization per action").
"""
from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

import structlog

from ..errors import Forbidden, NotFound
from ..keys import CONFIG, ENGINE
from .auth import Principal

log = structlog.get_logger("ovault.api.authz")

WORDS = {"vm": "VM", "cluster": "cluster", "storage_domain": "storage domain", "disk": "disk",
         "data_center": "data center", "system": "the system"}
ROLE_PERMITS_SECONDS = 3600.0


@dataclass(frozen=True)
class Obj:
    """An engine object an action touches."""
    kind: str  # vm | cluster | storage_domain | disk | data_center | system
    id: str | None
    name: str | None = None
    vm_id: str | None = None  # a disk: the VM it belongs to (its permissions apply to it)

    def describe(self) -> str:
        if self.kind == "system":
            return WORDS["system"]
        label = f"{self.name} ({self.id})" if self.name else str(self.id)
        return f"{WORDS.get(self.kind, self.kind)} {label}"


class PermitMissing(Forbidden):
    """403: the user lacks an engine permit on an object."""

    def __init__(self, permit: str, obj: Obj):
        super().__init__(f"this needs the engine permit {permit!r} on {obj.describe()}; "
                         "your engine roles there do not carry it")
        self.problem_extra = {"permit": permit, "object_type": obj.kind, "object_id": obj.id}


class Authorizer:
    def __init__(self, engine, ttl: float = 60.0):
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def _cached(self, key: tuple, ttl: float, fetch):
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit and hit[0] > time.monotonic():
                return hit[1]
            value = await fetch()
            if len(self._cache) > 20_000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + ttl, value)
            return value

    def forget(self) -> None:
        """Drop the cached permissions and VM placements (the engine logged a change)."""
        for k in [k for k in self._cache if k[0] in ("perms", "vm", "disk")]:
            self._cache.pop(k, None)

    # --- the engine's answers ----------------------------------------------------------------
    async def _user_permissions(self, user_id: str):
        return await self._cached(("perms", user_id), self.ttl,
                                  lambda: self.engine.user_permissions(user_id))

    async def _role_permits(self, role_id: str) -> frozenset:
        return await self._cached(("role", role_id), max(self.ttl, ROLE_PERMITS_SECONDS),
                                  lambda: self.engine.role_permits(role_id))

    async def _cluster_dc(self, cluster_id: str) -> str | None:
        async def fetch():
            return {c.id: (c.data_center.id if getattr(c, "data_center", None) else None)
                    for c in await self.engine.list_clusters()}
        return (await self._cached(("clusters",), self.ttl, fetch)).get(cluster_id)

    async def _sd_dcs(self, sd_id: str) -> list[str]:
        async def fetch():
            return {sd.id: [dc.id for dc in (getattr(sd, "data_centers", None) or [])]
                    for sd in await self.engine.list_storage_domains()}
        return (await self._cached(("sds",), self.ttl, fetch)).get(sd_id, [])

    async def _vm_cluster(self, vm_id: str) -> str | None:
        async def fetch():
            try:
                vm = await self.engine.get_vm(vm_id)
            except NotFound:
                return None
            return vm.cluster.id if getattr(vm, "cluster", None) else None
        return await self._cached(("vm", vm_id), self.ttl, fetch)

    async def _disk_sds(self, disk_id: str) -> list[str]:
        async def fetch():
            try:
                d = await self.engine.get_disk(disk_id)
            except NotFound:
                return []
            return [sd.id for sd in (getattr(d, "storage_domains", None) or [])] if d else []
        return await self._cached(("disk", disk_id), self.ttl, fetch)

    async def tree(self, obj: Obj) -> set[tuple[str, str | None]]:
        """The object and every object above it in the engine's tree."""
        out: set[tuple[str, str | None]] = {(obj.kind, obj.id), ("system", None)}

        async def cluster(cid):
            if cid:
                out.add(("cluster", cid))
                dc = await self._cluster_dc(cid)
                if dc:
                    out.add(("data_center", dc))

        async def sd(sid):
            out.add(("storage_domain", sid))
            out.update(("data_center", dc) for dc in await self._sd_dcs(sid))
        if obj.kind == "vm":
            await cluster(await self._vm_cluster(obj.id))
        elif obj.kind == "cluster":
            await cluster(obj.id)
        elif obj.kind == "storage_domain":
            await sd(obj.id)
        elif obj.kind == "disk":
            for s in await self._disk_sds(obj.id):
                await sd(s)
            if obj.vm_id:
                out.add(("vm", obj.vm_id))
                await cluster(await self._vm_cluster(obj.vm_id))
        return out

    async def permits(self, user_id: str, obj: Obj) -> frozenset:
        """The permits a user holds on an object (direct or inherited)."""
        tree = await self.tree(obj)
        roles = {rid for rid, kind, oid in await self._user_permissions(user_id)
                 if (kind, oid) in tree}
        out: set[str] = set()
        for rid in sorted(roles):
            out |= await self._role_permits(rid)
        return frozenset(out)

    # --- checks --------------------------------------------------------------------------------
    async def require(self, p: Principal, permit: str, obj: Obj) -> None:
        """Refuse (403 naming permit and object) unless `p` may `permit` on `obj`."""
        if not restricted(p):
            return
        if not p.engine_user_id:
            raise Forbidden("the engine did not say who you are (no user id for your token); "
                            "ask an ovault administrator")
        if permit not in await self.permits(p.engine_user_id, obj):
            log.info("engine permit missing", user=p.name, permit=permit, object_type=obj.kind,
                     object_id=obj.id)
            raise PermitMissing(permit, obj)

    async def require_all(self, p: Principal, checks) -> None:
        for permit, obj in checks:
            await self.require(p, permit, obj)


def restricted(p: Principal) -> bool:
    """Whether the engine's permits decide for this principal (non-admin SSO users)."""
    return p.kind == "sso" and p.vm_ids is not None


_authorizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def authorizer(app) -> Authorizer:
    """The application's authorizer (one per application, made on first use)."""
    az = _authorizers.get(app)
    if az is None or az.engine is not app[ENGINE]:
        cfg = app.get(CONFIG)
        ttl = float(getattr(getattr(cfg, "api", None), "sso_cache_seconds", 60.0) or 60.0)
        az = _authorizers[app] = Authorizer(app[ENGINE], ttl=ttl)
    return az
