"""Authentication and roles at the HTTP edge: every refusal is problem+json."""
from orchestrator.api.sso import SsoUser
from orchestrator.errors import PROBLEM_BASE


def _is_problem(status, ctype, body, code, slug):
    assert status == code, body
    assert ctype == "application/problem+json"
    assert body["status"] == code and body["type"] == PROBLEM_BASE + slug
    assert body["title"] and body["detail"]


async def test_health_is_open_and_everything_else_needs_a_token(api):
    status, _, body = await api.call("GET", "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})
    for path in ("/api/v1/jobs", "/api/v1/backups", "/api/v1/tokens", "/api/v1/webhooks", "/metrics"):
        status, ctype, body = await api.call("GET", path, token=None)
        _is_problem(status, ctype, body, 401, "unauthorized")
        assert body["detail"] == "missing bearer token"
    status, ctype, body = await api.call("GET", "/api/v1/jobs", headers={"Authorization": "Basic eDp5"},
                                         token=None)
    _is_problem(status, ctype, body, 401, "unauthorized")


async def test_unknown_expired_and_revoked_tokens_are_refused(api):
    for bad in ("ovt_" + "x" * 40, "not-an-sso-token"):
        status, ctype, body = await api.call("GET", "/api/v1/me", token=bad)
        _is_problem(status, ctype, body, 401, "unauthorized")
        assert "invalid, expired or revoked" in body["detail"]
    t, plain = await api.catalog.tokens.create("short-lived", "viewer")
    assert (await api.call("GET", "/api/v1/me", token=plain))[0] == 200
    await api.catalog.tokens.revoke(t.id)
    status, ctype, body = await api.call("GET", "/api/v1/me", token=plain)
    _is_problem(status, ctype, body, 401, "unauthorized")


async def test_roles_are_enforced_before_the_handler_runs(api):
    viewer, operator = await api.token("viewer"), await api.token("operator")
    status, _, me = await api.call("GET", "/api/v1/me", token=viewer)
    assert status == 200 and me["role"] == "viewer" and me["kind"] == "token" and me["vm_ids"] is None
    assert (await api.call("GET", "/api/v1/jobs", token=viewer))[0] == 200
    # viewer cannot start a backup; operator cannot manage tokens or webhooks
    status, ctype, body = await api.call("POST", "/api/v1/backups", token=viewer, json={"vm_ids": []})
    _is_problem(status, ctype, body, 403, "forbidden")
    assert body["detail"] == "this needs the operator role; you have viewer"
    for method, path in (("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("GET", "/api/v1/webhooks"),
                         ("POST", "/api/v1/targets")):
        status, ctype, body = await api.call(method, path, token=operator, json={})
        _is_problem(status, ctype, body, 403, "forbidden")
        assert body["detail"] == "this needs the admin role; you have operator"
    assert api.runner.pokes == 0
    assert await api.catalog.tokens.list() and len(await api.catalog.webhooks.list()) == 0


async def test_sso_users_see_only_their_vms_and_get_404_for_others(api):
    mine, theirs = api.engine.add_vm("mine"), api.engine.add_vm("theirs")
    api.sso.users["sso-user"] = SsoUser(name="user@internal", principal_id="p1", admin=False,
                                        vm_ids=frozenset({mine}), engine_user_id="u-1")
    api.sso.users["sso-admin"] = SsoUser(name="admin@internal", principal_id="p0", admin=True, vm_ids=None)
    status, _, me = await api.call("GET", "/api/v1/me", token="sso-user")
    assert (status, me) == (200, {"name": "user@internal", "role": "operator", "kind": "sso", "vm_ids": [mine]})
    status, _, me = await api.call("GET", "/api/v1/me", token="sso-admin")
    assert (me["role"], me["vm_ids"]) == ("admin", None)
    status, _, vms = await api.call("GET", "/api/v1/vms", token="sso-user")
    assert [v["name"] for v in vms["items"]] == ["mine"]
    status, ctype, body = await api.call("GET", f"/api/v1/vms/{theirs}", token="sso-user")
    _is_problem(status, ctype, body, 404, "not-found")
    # a backup of a VM they cannot see is refused as if it did not exist, and nothing is queued
    status, ctype, body = await api.call("POST", "/api/v1/backups", token="sso-user", json={"vm_ids": [theirs]})
    _is_problem(status, ctype, body, 404, "not-found")
    assert list((await api.catalog.jobs.list()).items) == [] and api.runner.pokes == 0
    # operator, not admin
    status, ctype, body = await api.call("GET", "/api/v1/tokens", token="sso-user")
    _is_problem(status, ctype, body, 403, "forbidden")
    _, _, vms = await api.call("GET", "/api/v1/vms", token="sso-admin")
    assert sorted(v["name"] for v in vms["items"]) == ["mine", "theirs"]


async def test_unknown_route_and_method_are_problems_too(api):
    status, ctype, body = await api.call("GET", "/api/v1/nothing-here")
    _is_problem(status, ctype, body, 404, "not-found")
    status, ctype, body = await api.call("PUT", "/api/v1/jobs")
    _is_problem(status, ctype, body, 405, "method-not-allowed")


async def test_sso_users_never_see_jobs_without_vms(api):
    """Prune and gc jobs have no VM machines; their requests name VMs and backups
    of other users, so a restricted user sees none of them, in lists or by id."""
    mine = api.engine.add_vm("mine-only")
    api.sso.users["sso-user"] = SsoUser(name="user@internal", principal_id="p1", admin=False,
                                        vm_ids=frozenset({mine}), engine_user_id="u-1")
    prune = await api.catalog.policies.create_job("prune", {"vm_ids": ["0" * 8 + "-0000-0000-0000-" + "0" * 12]})
    admin = await api.token("admin")
    status, _, page = await api.call("GET", "/api/v1/jobs", token=admin)
    assert status == 200 and str(prune.id) in [j["id"] for j in page["items"]]
    status, _, page = await api.call("GET", "/api/v1/jobs", token="sso-user")
    assert status == 200 and str(prune.id) not in [j["id"] for j in page["items"]]
    status, ctype, body = await api.call("GET", f"/api/v1/jobs/{prune.id}", token="sso-user")
    _is_problem(status, ctype, body, 404, "not-found")
