"""Every route refuses missing, wrong and expired tokens (401) and too-weak
roles (403) — generated from the route table, so no route is forgotten —
and oVirt SSO users see exactly the VMs the engine shows them."""
from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
import uuid

import aiohttp
import pytest

from orchestrator import config
from orchestrator.api.auth import ROLES, declared_role
from orchestrator.catalog import NewMachine
from orchestrator.service import create_app
from tests.e2e.api_harness import ApiServer, cleanup, state_root

pytestmark = pytest.mark.e2e
OPEN = {"/healthz", "/readyz"}


def _route_table():
    app = create_app(config.load(env={}))
    out = []
    for r in app.router.routes():
        path = r.resource.canonical
        if r.method == "HEAD" or path in OPEN:
            continue
        out.append((r.method, path, declared_role(r.handler)))
    return sorted(out)


ROUTES = _route_table()


def concrete(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: "1" if m.group(1) == "delivery_id" else str(uuid.uuid4()), path)


@pytest.fixture(scope="module")
def api(sandbox):
    d = state_root()
    def configure(c):
        c.api.cors_origins = ["https://engine.example"]
        # this test sends bad tokens to every route from one address on purpose;
        # the failed-authentication limit is tested in tests/integration/api/test_api_exposure.py
        c.api.auth_failures_burst = 1_000_000
    s = ApiServer(sandbox.dir, d, configure=configure).start()
    s.tokens = {role: s.token_for(role) for role in ROLES}
    expired = s.token_for("admin", expires_in=1)
    revoked = s.ok("POST", "/api/v1/tokens", {"name": "gone", "role": "admin"}, expect=201)
    s.ok("DELETE", f"/api/v1/tokens/{revoked['id']}")
    deadline = time.monotonic() + 10  # until its one second of life is over (the server says so)
    while s.call("GET", "/api/v1/me", token=expired)[0] != 401:
        assert time.monotonic() < deadline, "a token with expires_in=1 was still accepted after 10 s"
        time.sleep(0.1)
    s.bad_tokens = {"missing": None, "garbage": "not-a-token",
                    "wrong": "ovt_" + uuid.uuid4().hex + "_" + "A" * 43,
                    "expired": expired, "revoked": revoked["token"], "sso-unknown": "x" * 64}
    yield s
    s.stop()
    cleanup(d)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_route_refuses_bad_tokens_and_weak_roles(api, route):
    method, path, role = route
    assert role in ROLES, f"{method} {path} declares no role"
    url = concrete(path)
    body = {} if method in ("POST", "PATCH") else None
    for why, tok in api.bad_tokens.items():
        status, doc = api.call(method, url, body, token=tok)
        assert status == 401, (why, status, doc)
        assert doc["type"] == "https://ovault.dev/problems/unauthorized" and doc["status"] == 401
    for weaker, rank in ROLES.items():
        if rank < ROLES[role]:
            status, doc = api.call(method, url, body, token=api.tokens[weaker])
            assert status == 403, (weaker, status, doc)
            assert doc["type"] == "https://ovault.dev/problems/forbidden"
    status, doc = api.call(method, url, body, token=api.tokens[role])
    assert status not in (401, 403), (status, doc)


def test_health_needs_no_token(api):
    assert api.call("GET", "/healthz", token=None) == (200, {"status": "ok"})
    status, doc = api.call("GET", "/readyz", token=None)
    assert (status, doc) == (200, {"status": "ready"})  # nothing more to an unauthenticated caller


def _sso_token(sandbox, user: str, password: str) -> str:
    e = sandbox.engine
    base = e["api"].rsplit("/api", 1)[0]
    data = urllib.parse.urlencode({"grant_type": "password", "username": user, "password": password,
                                   "scope": "ovirt-app-api"}).encode()
    with urllib.request.urlopen(urllib.request.Request(base + "/sso/oauth/token", data=data),
                                context=sandbox.ssl, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def test_sso_user_sees_only_the_engine_s_vms(api, sandbox):
    mine, other = sandbox.vm("db-primary")["id"], sandbox.vm("legacy-erp")["id"]
    name = f"op-{uuid.uuid4().hex[:6]}@internal"
    sandbox.admin("POST", "/users", {"name": name, "password": "pw-123456", "admin": False, "vm_ids": [mine]})
    tok = _sso_token(sandbox, name, "pw-123456")

    assert api.ok("GET", "/api/v1/me", token=tok) == {"name": name, "role": "operator", "kind": "sso",
                                                      "vm_ids": [mine]}
    assert [v["id"] for v in api.ok("GET", "/api/v1/vms", token=tok)["items"]] == [mine]
    assert api.ok("GET", f"/api/v1/vms/{mine}", token=tok)["id"] == mine
    # The other VM does not exist for this user, whatever the route.
    bid = uuid.uuid4()
    api.run(api.catalog.backups.create(backup_id=bid, vm_id=other, vm_name="legacy-erp", mode="full",
                                       method="snapshot"))
    for method, path, body in [("GET", f"/api/v1/vms/{other}", None),
                               ("POST", "/api/v1/backups", {"vm_ids": [other]}),
                               ("POST", "/api/v1/backups", {"vm_ids": [mine, other]}),
                               ("GET", f"/api/v1/backups/{bid}", None),
                               ("DELETE", f"/api/v1/backups/{bid}", None),
                               ("POST", f"/api/v1/backups/{bid}/restore", {"kind": "new"})]:
        status, doc = api.call(method, path, body, token=tok)
        assert status == 404 and doc["type"] == "https://ovault.dev/problems/not-found", (method, path, doc)
    assert bid not in {b["id"] for b in api.ok("GET", "/api/v1/backups?limit=500", token=tok)["items"]}
    assert api.ok("GET", f"/api/v1/backups?vm_id={other}", token=tok)["items"] == []
    assert str(bid) in {b["id"] for b in api.ok("GET", f"/api/v1/backups?vm_id={other}")["items"]}
    # Operator, not admin: no webhooks, tokens or targets changes.
    for method, path in [("GET", "/api/v1/webhooks"), ("POST", "/api/v1/tokens"), ("POST", "/api/v1/targets")]:
        assert api.call(method, path, {} if method == "POST" else None, token=tok)[0] == 403
    # A job of the other VM is invisible too. (It is a real job: this replica may
    # start it, so it is canceled at once and awaited — a backup cut off by the
    # server's shutdown would leave its snapshot in the engine for later tests.)
    job = api.run(api.catalog.jobs.create("backup", [NewMachine(vm_id=other)], request={}))
    api.run(api.catalog.jobs.request_cancel(job.id))
    assert api.call("GET", f"/api/v1/jobs/{job.id}", token=tok)[0] == 404
    assert api.call("POST", f"/api/v1/jobs/{job.id}/cancel", token=tok)[0] == 404
    assert str(job.id) not in {j["id"] for j in api.ok("GET", "/api/v1/jobs?limit=500", token=tok)["items"]}
    deadline = time.monotonic() + 120
    while api.ok("GET", f"/api/v1/jobs/{job.id}")["state"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, "the canceled job did not end"
        time.sleep(0.3)


def _engine_vms_seen_by(sandbox, token: str) -> set[str]:
    req = urllib.request.Request(sandbox.engine["api"] + "/vms", headers={
        "Authorization": f"Bearer {token}", "Filter": "true", "Accept": "application/json"})
    with urllib.request.urlopen(req, context=sandbox.ssl, timeout=30) as r:
        return {v["id"] for v in json.loads(r.read()).get("vm", [])}


def test_a_vm_restored_by_an_sso_user_is_theirs_in_the_engine(api, sandbox):
    """ovault creates the VM with its own account; the engine must still show
    it to the user who restored it (UserVmManager on it, as if they made it)."""
    mine = sandbox.vm("web-frontend")["id"]
    name = f"op-{uuid.uuid4().hex[:6]}@internal"
    conn = sandbox.connect()
    try:  # the engine's rights to back up the VM and create VMs and disks beside it
        cluster = conn.system_service().vms_service().vm_service(mine).get().cluster.id
        sds = [x.id for x in conn.system_service().storage_domains_service().list()]
    finally:
        conn.close()
    sandbox.admin("POST", "/users", {"name": name, "password": "pw-123456", "admin": False, "permissions": [
        {"role": "UserVmManager", "vm_id": mine}, {"role": "PowerUserRole", "cluster_id": cluster},
        *({"role": "DiskCreator", "storage_domain_id": sd} for sd in sds)]})
    tok = _sso_token(sandbox, name, "pw-123456")
    job = api.ok("POST", "/api/v1/backups", {"vm_ids": [mine], "mode": "full"}, token=tok, expect=202)["job"]
    done = _wait_job(api, job["id"])
    assert done["state"] == "succeeded", done
    bid = done["machines"][0]["backup_id"]
    new_name = f"mine-restored-{uuid.uuid4().hex[:4]}"
    job = api.ok("POST", f"/api/v1/backups/{bid}/restore", {"kind": "new", "name": new_name},
                 token=tok, expect=202)["job"]
    done = _wait_job(api, job["id"])
    assert done["state"] == "succeeded", done
    conn = sandbox.connect()
    try:
        (vm,) = conn.system_service().vms_service().list(search=f"name={new_name}")
        perms = conn.system_service().vms_service().vm_service(vm.id).permissions_service().list()
        user_id = [p.user.id for p in perms if p.user is not None]
        assert len(user_id) == 1  # exactly one grant, to that user
        assert _engine_vms_seen_by(sandbox, tok) == {mine, vm.id}
    finally:
        conn.system_service().vms_service().vm_service(vm.id).remove()
        conn.close()
    # An admin's restore grants nothing (admins see every VM anyway).
    job = api.ok("POST", f"/api/v1/backups/{bid}/restore", {"kind": "new", "name": new_name + "-a"},
                 expect=202)["job"]
    assert _wait_job(api, job["id"])["state"] == "succeeded"
    conn = sandbox.connect()
    try:
        (vm,) = conn.system_service().vms_service().list(search=f"name={new_name}-a")
        assert conn.system_service().vms_service().vm_service(vm.id).permissions_service().list() == []
        conn.system_service().vms_service().vm_service(vm.id).remove()
    finally:
        conn.close()


def _wait_job(api, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        j = api.ok("GET", f"/api/v1/jobs/{job_id}")
        if j["state"] in ("succeeded", "failed", "canceled"):
            return j
        assert time.monotonic() < deadline, f"job {job_id} did not end: {j}"
        time.sleep(0.3)


def test_sso_admin_is_admin_and_bad_sso_token_is_401(api, sandbox):
    e = sandbox.engine
    tok = _sso_token(sandbox, e["username"], e["password"])
    me = api.ok("GET", "/api/v1/me", token=tok)
    assert me["role"] == "admin" and me["kind"] == "sso" and me["vm_ids"] is None
    assert len(api.ok("GET", "/api/v1/vms", token=tok)["items"]) >= 3
    api.ok("GET", "/api/v1/webhooks", token=tok)
    status, doc = api.call("GET", "/api/v1/vms", token=tok[:-4] + "AAAA")
    assert status == 401


async def test_websocket_auth(api, sandbox):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(api.url + "/api/v1/ws") as ws:
            await ws.send_json({"type": "subscribe", "jobs": "*"})
            m = await ws.receive(timeout=10)
            assert m.type == aiohttp.WSMsgType.CLOSE and m.data == 4401
        async with http.ws_connect(api.url + "/api/v1/ws") as ws:
            await ws.send_json({"type": "auth", "token": api.bad_tokens["expired"]})
            m = await ws.receive(timeout=10)
            assert m.type == aiohttp.WSMsgType.CLOSE and m.data == 4401
        async with http.ws_connect(api.url + "/api/v1/ws",
                                   headers={"Authorization": f"Bearer {api.tokens['viewer']}"}) as ws:
            assert (await ws.receive_json(timeout=10))["principal"]["role"] == "viewer"
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json(timeout=10) == {"type": "pong"}
            await ws.send_json({"type": "subscribe", "jobs": ["nope"]})
            assert (await ws.receive_json(timeout=10))["type"] == "error"
        async with http.get(api.url + "/api/v1/ws") as r:  # not an upgrade, no token
            assert r.status == 401


def test_cors_only_for_configured_origins(api):
    def preflight(origin):
        req = urllib.request.Request(api.url + "/api/v1/jobs", method="OPTIONS",
                                     headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "authorization"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            with e:
                return e.code, dict(e.headers)
    status, h = preflight("https://engine.example")
    assert status == 204 and h["Access-Control-Allow-Origin"] == "https://engine.example"
    assert "Authorization" in h["Access-Control-Allow-Headers"] and "Access-Control-Allow-Credentials" not in h
    status, h = preflight("https://evil.example")
    assert status == 403 and "Access-Control-Allow-Origin" not in h
    status, _ = api.call("GET", "/api/v1/jobs", token=None, headers={"Origin": "https://engine.example"})
    assert status == 401  # and the browser can read it:
    req = urllib.request.Request(api.url + "/api/v1/me", headers={"Origin": "https://engine.example",
                                                                  "Authorization": f"Bearer {api.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://engine.example"
        assert "Origin" in r.headers["Vary"]


def test_metrics_are_ovault_prefixed_with_job_and_engine_figures(api):
    api.ok("GET", "/api/v1/vms")
    status, text = api.call("GET", "/metrics", token=api.tokens["viewer"])
    assert status == 200
    names = {l.split("{")[0].split(" ")[0] for l in text.splitlines() if l and not l.startswith("#")}
    assert names and all(n.startswith("ovault_") for n in names), names
    assert 'ovault_engine_call_seconds_count{operation="vms.list"}' in text
    assert "ovault_http_requests_total" in text and "ovault_jobs{" in text
