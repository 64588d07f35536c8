"""SSO token validation (orchestrator/api/sso.py) against a scripted engine
(aioresponses): what is asked, with which credentials, what is cached, and how
engine failures surface. The real engine simulator is exercised by
tests/e2e/test_api_auth.py."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.unit.http.mock_http import aioresponses
from yarl import URL

from orchestrator.api.sso import SsoVerifier
from orchestrator.errors import EngineUnavailable

API = "https://engine.test/ovirt-engine/api"
TOKEN_INFO = "https://engine.test/ovirt-engine/sso/oauth/token-info"
VMS_XML = b"""<vms><vm id="AAAAAAAA-0000-0000-0000-000000000001"><name>web</name></vm>
<vm id="aaaaaaaa-0000-0000-0000-000000000002"><name>db</name></vm></vms>"""
ROOT_XML = b'<api><authenticated_user href="/x" id="user-42"/></api>'


def _calls(m, method, url) -> list:
    return m.requests.get((method, URL(url)), [])


@pytest.fixture
async def sso():
    v = SsoVerifier(API + "/", cache_seconds=60)
    yield v
    await v.close()


async def test_an_admin_is_known_from_token_info_alone_and_cached(sso):
    with aioresponses() as m:
        m.post(TOKEN_INFO, payload={"active": True, "user_id": "admin@internal",
                                    "ovirt": {"admin": True, "principal_id": "p-1"}})
        user = await sso.verify("tok-admin")
        assert (user.name, user.admin, user.vm_ids, user.principal_id) == ("admin@internal", True, None, "p-1")
        again = await sso.verify("tok-admin")  # from the cache: no second request
        assert again == user
        calls = _calls(m, "POST", TOKEN_INFO)
        assert len(calls) == 1
        assert calls[0].kwargs["data"] == {"token": "tok-admin"}
        assert not _calls(m, "GET", API + "/vms")
    assert all(b"tok-admin" not in k for k in sso._cache)  # keyed by a digest, never the token


async def test_a_user_gets_the_vms_the_engine_shows_them_asked_with_their_own_token(sso):
    with aioresponses() as m:
        m.post(TOKEN_INFO, payload={"active": True, "user_id": "joe@internal", "ovirt": {"admin": False}})
        m.get(API + "/vms", body=VMS_XML, content_type="application/xml")
        m.get(API, body=ROOT_XML, content_type="application/xml")
        user = await sso.verify("tok-joe")
        assert user.admin is False and user.name == "joe@internal"
        assert user.vm_ids == frozenset({"aaaaaaaa-0000-0000-0000-000000000001",
                                         "aaaaaaaa-0000-0000-0000-000000000002"})  # lower-cased
        assert user.engine_user_id == "user-42"
        for url in (API + "/vms", API):
            (call,) = _calls(m, "GET", url)
            h = call.kwargs["headers"]
            assert h["Authorization"] == "Bearer tok-joe" and h["Filter"] == "true"


async def test_a_user_the_engine_refuses_to_list_for_sees_no_vm(sso):
    with aioresponses() as m:
        m.post(TOKEN_INFO, payload={"active": True, "user_id": "x@internal", "ovirt": {"admin": False}})
        m.get(API + "/vms", status=403)
        m.get(API, status=403)
        user = await sso.verify("tok-x")
        assert user.vm_ids == frozenset() and user.engine_user_id is None


async def test_an_inactive_token_is_none_and_cached_briefly(sso):
    with aioresponses() as m:
        m.post(TOKEN_INFO, payload={"active": False})
        m.post(TOKEN_INFO, status=400, payload={"error": "invalid_grant"})
        assert await sso.verify("tok-old") is None
        assert await sso.verify("tok-old") is None
        assert len(_calls(m, "POST", TOKEN_INFO)) == 1
        assert await sso.verify("tok-other") is None  # a 400 is "not active" too


async def test_concurrent_checks_of_one_new_token_ask_the_engine_once(sso):
    with aioresponses() as m:
        m.post(TOKEN_INFO, payload={"active": True, "user_id": "a@internal", "ovirt": {"admin": True}})
        users = await asyncio.gather(*(sso.verify("tok-burst") for _ in range(10)))
        assert {u.name for u in users} == {"a@internal"}
        assert len(_calls(m, "POST", TOKEN_INFO)) == 1


@pytest.mark.parametrize("reply, words", [
    ({"status": 503}, "SSO token-info answered HTTP 503"),
    ({"exception": aiohttp.ClientConnectionError("connection refused")}, "connection refused"),
    ({"exception": asyncio.TimeoutError()}, "TimeoutError"),
    ({"body": b"<html>not json</html>", "status": 200}, "cannot validate the SSO token"),
])
async def test_engine_failures_are_engine_unavailable_and_not_cached(sso, reply, words):
    with aioresponses() as m:
        m.post(TOKEN_INFO, **reply)
        with pytest.raises(EngineUnavailable, match=words):
            await sso.verify("tok-1")
        m.post(TOKEN_INFO, payload={"active": True, "user_id": "a@internal", "ovirt": {"admin": True}})
        assert (await sso.verify("tok-1")).name == "a@internal"  # the failure was not remembered


async def test_listing_the_users_vms_failing_is_engine_unavailable(sso):
    with aioresponses() as m:
        m.post(TOKEN_INFO, payload={"active": True, "user_id": "joe@internal", "ovirt": {"admin": False}})
        m.get(API + "/vms", status=500)
        with pytest.raises(EngineUnavailable, match="listing the user's VMs: HTTP 500"):
            await sso.verify("tok-joe")
