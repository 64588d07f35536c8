"""Tokens and webhooks over HTTP against the real catalog (admin resources)."""
import uuid

from orchestrator.keys import CONFIG


async def test_tokens_create_list_revoke(api):
    status, _, made = await api.call("POST", "/api/v1/tokens",
                                     json={"name": "ci runner", "role": "operator", "expires_in": 3600})
    assert status == 201, made
    plain = made.pop("token")
    assert plain.startswith("ovt_") and made["role"] == "operator" and made["expires_at"] and not made["revoked"]
    # the plain token works, carries its role, and is never shown again
    status, _, me = await api.call("GET", "/api/v1/me", token=plain)
    assert (status, me["name"], me["role"]) == (200, "ci runner", "operator")
    _, _, listed = await api.call("GET", "/api/v1/tokens")
    mine = [t for t in listed["items"] if t["id"] == made["id"]]
    assert len(mine) == 1 and "token" not in mine[0] and plain not in str(listed)
    assert mine[0]["last_used_at"] is not None
    # revoke: 200 with revoked, then 401 for the token, hidden unless include_revoked
    status, _, gone = await api.call("DELETE", f"/api/v1/tokens/{made['id']}")
    assert status == 200 and gone["revoked"] is True
    assert (await api.call("GET", "/api/v1/me", token=plain))[0] == 401
    _, _, active = await api.call("GET", "/api/v1/tokens")
    assert made["id"] not in {t["id"] for t in active["items"]}
    _, _, every = await api.call("GET", "/api/v1/tokens?include_revoked=true")
    assert made["id"] in {t["id"] for t in every["items"]}
    status, _, body = await api.call("DELETE", f"/api/v1/tokens/{uuid.uuid4()}")
    assert status == 404


async def test_token_validation_messages(api):
    cases = [({"role": "admin"}, "name is required"),
             ({"name": "x"}, "role is required"),
             ({"name": "x", "role": "root"}, "role must be one of viewer, operator, admin"),
             ({"name": "x", "role": "viewer", "expires_in": 0}, "expires_in must be between 1 and 315360000"),
             ({"name": "x;rm", "role": "viewer"}, "name has characters that are not allowed"),
             ({"name": "x", "role": "viewer", "scope": "all"}, "unknown fields: scope")]
    for body, detail in cases:
        status, ctype, problem = await api.call("POST", "/api/v1/tokens", json=body)
        assert (status, ctype, problem["detail"]) == (422, "application/problem+json", detail), body
    assert [t.name for t in await api.catalog.tokens.list()] == ["test-admin"]


async def test_webhooks_crud_and_the_delivery_log(api):
    status, _, w = await api.call("POST", "/api/v1/webhooks",
                                  json={"url": "https://hooks.example.com/ovault", "events": ["job.*", "backup.deleted"]})
    assert status == 201, w
    secret = w.pop("secret")  # generated, shown once
    assert len(secret) >= 32
    assert (w["url"], w["events"], w["enabled"]) == ("https://hooks.example.com/ovault", ["backup.deleted", "job.*"], True)
    status, _, got = await api.call("GET", f"/api/v1/webhooks/{w['id']}")
    assert status == 200 and "secret" not in got and secret not in str(got)
    api.app[CONFIG].webhooks.allow_networks = ["10.0.0.0/8"]  # an in-house receiver (private address)
    status, _, chosen = await api.call("POST", "/api/v1/webhooks",
                                       json={"url": "http://10.0.0.9:8080/h", "secret": "s" * 16, "events": []})
    assert status == 201 and "secret" not in chosen and chosen["events"] == []  # [] = every event
    _, _, listed = await api.call("GET", "/api/v1/webhooks")
    assert sorted(x["id"] for x in listed["items"]) == sorted([w["id"], chosen["id"]])
    # update
    status, _, upd = await api.call("PATCH", f"/api/v1/webhooks/{w['id']}", json={"enabled": False})
    assert status == 200 and upd["enabled"] is False and upd["url"] == w["url"]
    status, _, body = await api.call("POST", f"/api/v1/webhooks/{w['id']}/test")
    assert status == 409 and "disabled" in body["detail"]
    # test event: one pending delivery in the log, no attempt yet, not retryable
    status, _, t = await api.call("POST", f"/api/v1/webhooks/{chosen['id']}/test")
    assert status == 202, t
    _, _, log = await api.call("GET", f"/api/v1/webhooks/{chosen['id']}/deliveries")
    assert [(d["id"], d["status"]) for d in log["items"]] == [(t["delivery_id"], "pending")]
    _, _, attempts = await api.call("GET", f"/api/v1/webhooks/{chosen['id']}/deliveries/{t['delivery_id']}/attempts")
    assert attempts == {"items": [], "next_cursor": None}
    status, _, body = await api.call("POST", f"/api/v1/webhooks/{chosen['id']}/deliveries/{t['delivery_id']}/retry")
    assert status == 409 and "has not failed" in body["detail"]
    # a delivery is only reachable under its own webhook
    status, _, _ = await api.call("GET", f"/api/v1/webhooks/{w['id']}/deliveries/{t['delivery_id']}/attempts")
    assert status == 404
    # delete
    assert (await api.call("DELETE", f"/api/v1/webhooks/{w['id']}"))[0] == 204
    assert (await api.call("GET", f"/api/v1/webhooks/{w['id']}"))[0] == 404
    assert [x.id for x in await api.catalog.webhooks.list()] == [uuid.UUID(chosen["id"])]


async def test_webhook_validation_messages(api):
    cases = [({}, "url is required"),
             ({"url": "ftp://x/y"}, "url must be an http:// or https:// URL without credentials"),
             ({"url": "https://user:pw@x/y"}, "url must be an http:// or https:// URL without credentials"),
             ({"url": "https://x:99999/y"}, "url is not a valid URL"),
             ({"url": "https://x/y", "secret": "short"},
              "secret must be at least 16 characters (it keys the HMAC signatures)"),
             ({"url": "https://x/y", "events": ["Job!"]}, "events has an invalid item 'Job!'"),
             ({"url": "https://x/y", "enabled": "yes"}, "enabled must be true or false")]
    for body, detail in cases:
        status, ctype, problem = await api.call("POST", "/api/v1/webhooks", json=body)
        assert (status, ctype, problem["detail"]) == (422, "application/problem+json", detail), body
    assert await api.catalog.webhooks.list() == []
