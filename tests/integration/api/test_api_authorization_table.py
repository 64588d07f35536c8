"""Every route × every kind of caller → the expected status.

The table is checked against the application's router: a route added without
a row here fails `test_every_route_has_a_row`, so no route ships without its
authorization being decided and tested.

Callers (`PRINCIPALS`): no token, a bad token, ovault API tokens of each role,
an oVirt SSO user whose engine permissions show them one VM only, and an
engine admin. Each has a role rank; unless a row says otherwise, a caller
gets 401 (not authenticated), 403 (role below the route's), or the row's
`ok` status. Rows list per-caller exceptions in `only` (e.g. the restricted
SSO user gets 404 for a VM the engine does not show them). To add a caller
(e.g. an SSO user with UserVmManager on a VM, once engine permissions are
checked per action), add it to `PRINCIPALS` with its rank and a setup, then
the exceptions it has in the rows' `only`.

Each request is chosen so that the allowed answer is deterministic: ids that
do not exist (404), bodies that are incomplete (422), harmless reads, and one
backup of a VM the restricted SSO user cannot see (202 for the others).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import pytest

from orchestrator.api.auth import LIMITER, declared_role
from orchestrator.api.sso import SsoUser

NOBODY = str(uuid.UUID(int=0xDEAD))  # an id nothing has
MINE, THEIRS = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


@dataclass(frozen=True)
class Principal:
    rank: int | None  # None: not authenticated (401); 0 viewer, 1 operator, 2 admin
    kind: str  # "none", "bad", "token" (ovault API token of `role`), "sso"
    role: str = ""
    sso: SsoUser | None = None
    grants: tuple = ()  # the engine permissions of an SSO user: (role, object kind, object id)


def _sso(name: str, uid: str, vm_ids=(), grants=()) -> Principal:
    """A non-admin engine user (operator rank; the engine's permits decide per action)."""
    return Principal(1, "sso", sso=SsoUser(name=f"{name}@internal", principal_id=uid, admin=False,
                                           vm_ids=frozenset(vm_ids), engine_user_id=uid), grants=tuple(grants))


PRINCIPALS = {
    "none": Principal(None, "none"),
    "bad_token": Principal(None, "bad"),
    "viewer": Principal(0, "token", "viewer"),
    "operator": Principal(1, "token", "operator"),
    "admin": Principal(2, "token", "admin"),
    # an engine user whose permissions show them one VM: operator on that VM only
    "sso_one_vm": Principal(1, "sso", sso=SsoUser(name="user@internal", principal_id="p1", admin=False,
                                                   vm_ids=frozenset({MINE}), engine_user_id="u-1")),
    "sso_engine_admin": Principal(2, "sso", sso=SsoUser(name="admin@internal", principal_id="p0", admin=True,
                                                        vm_ids=None)),
    # engine permissions (api/authz.py; per-permit cases in test_api_engine_permits.py)
    "sso_user_role": _sso("viewer-ish", "u-2", {MINE}, [("UserRole", "vm", MINE)]),
    "sso_vm_manager": _sso("manager", "u-3", {MINE}, [("UserVmManager", "vm", MINE)]),
    "sso_power_cluster": _sso("power", "u-4", (), [("PowerUserRole", "cluster", "c1")]),
    "sso_disk_creator": _sso("disks", "u-5", (), [("DiskCreator", "storage_domain", "sd1")]),
    "sso_no_permissions": _sso("nobody", "u-6"),
}
RESTRICTED = [k for k, p in PRINCIPALS.items() if p.kind == "sso" and p.rank == 1]
RANK = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class Row:
    path: str  # the concrete path requested
    ok: int  # the status of an allowed caller
    body: dict | None = None
    only: dict = field(default_factory=dict)  # caller -> status where it differs from the rule


# (method, route as the router spells it) -> the request and its expected answers
TABLE: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row("/healthz", 200),
    ("GET", "/readyz"): Row("/readyz", 200),
    ("GET", "/metrics"): Row("/metrics", 200),
    ("GET", "/api/openapi.json"): Row("/api/openapi.json", 200),
    ("GET", "/api/v1/me"): Row("/api/v1/me", 200),
    ("GET", "/api/v1/tokens"): Row("/api/v1/tokens", 200),
    ("POST", "/api/v1/tokens"): Row("/api/v1/tokens", 422, {}),
    ("DELETE", "/api/v1/tokens/{id}"): Row(f"/api/v1/tokens/{NOBODY}", 404),
    ("GET", "/api/v1/vms"): Row("/api/v1/vms", 200),
    ("GET", "/api/v1/vms/{id}"): Row(f"/api/v1/vms/{THEIRS}", 200, only=dict.fromkeys(RESTRICTED, 404)),
    ("GET", "/api/v1/clusters"): Row("/api/v1/clusters", 200),
    ("GET", "/api/v1/storage-domains"): Row("/api/v1/storage-domains", 200),
    # a backup of a VM the SSO user's engine permissions do not show them: as if it did not exist
    ("POST", "/api/v1/backups"): Row("/api/v1/backups", 202, {"vm_ids": [THEIRS]},
                                     only=dict.fromkeys(RESTRICTED, 404)),
    ("GET", "/api/v1/backups"): Row("/api/v1/backups", 200),
    ("GET", "/api/v1/backups/{id}"): Row(f"/api/v1/backups/{NOBODY}", 404),
    ("DELETE", "/api/v1/backups/{id}"): Row(f"/api/v1/backups/{NOBODY}", 404),
    ("PATCH", "/api/v1/backups/{id}"): Row(f"/api/v1/backups/{NOBODY}", 404, {"protected": True}),
    ("POST", "/api/v1/backups/{id}/restore"): Row(f"/api/v1/backups/{NOBODY}/restore", 404, {"kind": "new"}),
    ("GET", "/api/v1/backups/{id}/disks/{disk_id}/files"):
        Row(f"/api/v1/backups/{NOBODY}/disks/{NOBODY}/files?path=/", 404),
    ("GET", "/api/v1/backups/{id}/disks/{disk_id}/files/content"):
        Row(f"/api/v1/backups/{NOBODY}/disks/{NOBODY}/files/content?path=/sda1/etc/hostname", 404),
    ("POST", "/api/v1/backups/{id}/disks/{disk_id}/files/archive"):
        Row(f"/api/v1/backups/{NOBODY}/disks/{NOBODY}/files/archive", 404, {"paths": ["/sda1/etc"]}),
    ("GET", "/api/v1/vms/{id}/files"): Row(f"/api/v1/vms/{THEIRS}/files?name=hostname", 200,
                                           only=dict.fromkeys(RESTRICTED, 404)),
    ("GET", "/api/v1/vms/{id}/files/indexing"): Row(f"/api/v1/vms/{THEIRS}/files/indexing", 200,
                                                    only=dict.fromkeys(RESTRICTED, 404)),
    ("DELETE", "/api/v1/vms/{id}/files/indexing"): Row(f"/api/v1/vms/{THEIRS}/files/indexing", 200,
                                                       only=dict.fromkeys(RESTRICTED, 404)),
    ("GET", "/api/v1/jobs"): Row("/api/v1/jobs", 200),
    ("GET", "/api/v1/jobs/{id}"): Row(f"/api/v1/jobs/{NOBODY}", 404),
    ("POST", "/api/v1/jobs/{id}/cancel"): Row(f"/api/v1/jobs/{NOBODY}/cancel", 404),
    # without an Upgrade header: authenticated callers get aiohttp's 400
    ("GET", "/api/v1/ws"): Row("/api/v1/ws", 400),
    ("GET", "/api/v1/targets"): Row("/api/v1/targets", 200),
    ("POST", "/api/v1/targets"): Row("/api/v1/targets", 422, {}),
    ("GET", "/api/v1/targets/{id}"): Row(f"/api/v1/targets/{NOBODY}", 404),
    ("PATCH", "/api/v1/targets/{id}"): Row(f"/api/v1/targets/{NOBODY}", 404, {"name": "x"}),
    ("DELETE", "/api/v1/targets/{id}"): Row(f"/api/v1/targets/{NOBODY}", 404),
    ("GET", "/api/v1/webhooks"): Row("/api/v1/webhooks", 200),
    ("POST", "/api/v1/webhooks"): Row("/api/v1/webhooks", 422, {"url": "http://169.254.169.254/"}),
    ("GET", "/api/v1/webhooks/{id}"): Row(f"/api/v1/webhooks/{NOBODY}", 404),
    ("PATCH", "/api/v1/webhooks/{id}"): Row(f"/api/v1/webhooks/{NOBODY}", 404, {"enabled": False}),
    ("DELETE", "/api/v1/webhooks/{id}"): Row(f"/api/v1/webhooks/{NOBODY}", 404),
    ("GET", "/api/v1/webhooks/{id}/deliveries"): Row(f"/api/v1/webhooks/{NOBODY}/deliveries", 404),
    ("GET", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/attempts"):
        Row(f"/api/v1/webhooks/{NOBODY}/deliveries/1/attempts", 404),
    ("POST", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry"):
        Row(f"/api/v1/webhooks/{NOBODY}/deliveries/1/retry", 404),
    ("POST", "/api/v1/webhooks/{id}/test"): Row(f"/api/v1/webhooks/{NOBODY}/test", 404),
    ("POST", "/api/v1/policies"): Row("/api/v1/policies", 422, {}),
    ("GET", "/api/v1/policies"): Row("/api/v1/policies", 200),
    ("GET", "/api/v1/policies/next-runs"): Row("/api/v1/policies/next-runs?schedule=0+2+*+*+*&count=2", 200),
    ("GET", "/api/v1/policies/{id}"): Row(f"/api/v1/policies/{NOBODY}", 404),
    ("GET", "/api/v1/policies/{id}/ticks"): Row(f"/api/v1/policies/{NOBODY}/ticks", 404),
    ("PATCH", "/api/v1/policies/{id}"): Row(f"/api/v1/policies/{NOBODY}", 404, {"enabled": False}),
    ("DELETE", "/api/v1/policies/{id}"): Row(f"/api/v1/policies/{NOBODY}", 404),
    ("POST", "/api/v1/policies/{id}/run"): Row(f"/api/v1/policies/{NOBODY}/run", 404),
    ("GET", "/api/v1/policies/{id}/preview"): Row(f"/api/v1/policies/{NOBODY}/preview?vm_id={MINE}", 404),
    ("POST", "/api/v1/prune"): Row("/api/v1/prune", 422, {"vm_ids": "all"}),
    ("POST", "/api/v1/verify"): Row("/api/v1/verify", 422, {"backup_ids": "all"}),
}
OPEN = {("GET", "/healthz"), ("GET", "/readyz")}


def _routes(app) -> dict[tuple[str, str], str | None]:
    return {(r.method, r.resource.canonical): declared_role(r.handler)
            for r in app.router.routes() if r.method not in ("HEAD", "OPTIONS")}


def expected(key, who: str, role: str | None) -> int:
    p, row = PRINCIPALS[who], TABLE[key]
    if key in OPEN:
        return row.ok
    if p.rank is None:
        return 401
    if p.rank < RANK[role or "admin"]:
        return 403
    return row.only.get(who, row.ok)


async def _token(api, who: str) -> str | None:
    p = PRINCIPALS[who]
    if p.kind == "none":
        return None
    if p.kind == "bad":
        return "ovt_" + uuid.uuid4().hex + "_" + "A" * 43
    if p.kind == "token":
        return await api.token(p.role)
    token = f"sso-{who}"
    api.sso.users[token] = p.sso
    for role, kind, oid in p.grants:
        api.engine.grant(p.sso.engine_user_id, role, kind, oid)
    return token


async def _call(api, method, path, token, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with api.client.request(method, path, headers=headers, **kw) as r:
        text = await r.text()
        body = json.loads(text) if r.content_type.endswith("json") and text else text
        return r.status, r.content_type, body


async def test_every_route_has_a_row(api):
    routes = _routes(api.app)
    assert not set(routes) - set(TABLE), f"routes without an authorization row: {sorted(set(routes) - set(TABLE))}"
    assert not set(TABLE) - set(routes), f"rows for routes that do not exist: {sorted(set(TABLE) - set(routes))}"
    assert {k for k, role in routes.items() if role is None} == OPEN  # every other route declares its role


@pytest.mark.parametrize("who", sorted(PRINCIPALS))
async def test_every_route_answers_each_caller_as_the_table_says(api, who):
    api.engine.add_vm("mine", MINE)
    api.engine.add_vm("theirs", THEIRS)
    api.app[LIMITER].burst = 10**6  # one address sends every bad request here; the limit has its own test
    routes = _routes(api.app)
    token = await _token(api, who)
    got, want = {}, {}
    for key, row in sorted(TABLE.items()):
        method, _ = key
        kw = {"json": row.body} if row.body is not None else {}
        status, ctype, body = await _call(api, method, row.path, token, **kw)
        got[key], want[key] = status, expected(key, who, routes[key])
        if status in (401, 403, 404, 422):
            assert ctype == "application/problem+json" and body["status"] == status, (key, body)
    wrong = {f"{m} {p}": (got[(m, p)], want[(m, p)]) for (m, p) in got if got[(m, p)] != want[(m, p)]}
    assert not wrong, f"{who}: (got, expected) per route: {wrong}"
    # nothing was started but the one backup an allowed caller asked for
    jobs = (await api.catalog.jobs.list()).items
    started = sum(1 for k in got if got[k] == 202)
    assert len(jobs) == started and all(j.kind == "backup" for j in jobs)
    assert [m.vm_id for j in jobs for m in j.machines] == [THEIRS] * started
