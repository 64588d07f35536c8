"""A mover trusts only the orchestrator: its own host's token, the orchestrator's
client certificate (mutual TLS), its own host's imageio daemon and its own CA.

Each refusal is checked to have started nothing (the copy is a fake that counts
its calls); the TLS test runs a real listener with certificates from
`orchestrator.tls.mover_credentials`.
"""
from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext.copy import ImageioClient, InvalidRequest
from imageio_ext.mover import MoverConfig, create_app
from imageio_ext.mover import jobs as jobs_mod
from orchestrator.tls import make_ca, mover_credentials
from tests.unit.mover.test_mover_api import FakeCopies

HOST_A, HOST_B = "a" * 32, "b" * 32  # each host's own token
STORE = "nfs://nas/export/ovault"


def spec(**kw):
    d = dict(op="restore", transfer_url="https://host-a.example:54322/images/t-1", store=STORE,
             vm_id=str(uuid.uuid4()), backup_id=str(uuid.uuid4()), disk_id=str(uuid.uuid4()), size=8 << 20)
    d.update(kw)
    return d


def config(**kw) -> MoverConfig:
    o = {"token": HOST_A, "allowed_stores": STORE, "imageio_url": "https://host-a.example:54322",
         "imageio_ca": "/etc/pki/ovirt-engine/ca.pem", "events_interval": 0.05}
    o.update(kw)
    return MoverConfig.load(env={}, overrides=o)


@pytest.fixture
def fake(monkeypatch):
    f = FakeCopies()
    f.gate.set()
    monkeypatch.setattr(jobs_mod, "run_copy", f)

    async def no_store(self, url):
        return None
    monkeypatch.setattr(jobs_mod.JobManager, "store", no_store)
    return f


def auth(token):
    return {"Authorization": f"Bearer {token}"}


async def test_no_credential_or_another_hosts_token_is_refused(fake):
    async with TestClient(TestServer(create_app(config()))) as c:
        for headers in ({}, auth(HOST_B), auth(HOST_A[:-1]), {"Authorization": HOST_A}):
            for method, path, body in (("POST", "/v1/copies", spec()), ("GET", "/v1/copies", None)):
                r = await c.request(method, path, json=body, headers=headers)
                assert r.status == 401, (headers, path)
        assert fake.calls == 0
        r = await c.post("/v1/copies", json=spec(), headers=auth(HOST_A))
        assert r.status == 202, await r.text()


@pytest.mark.parametrize("url", [
    "https://attacker.example:54322/images/t-1",  # another server
    "https://host-b.example:54322/images/t-1",  # another host's daemon
    "https://host-a.example:8443/images/t-1",  # another port on this host
    "http://host-a.example:54322/images/t-1",  # not TLS
    "https://host-a.example.attacker.example:54322/images/t-1",
    "https://user@host-a.example:54322/images/t-1",
    "https://host-a.example:54322/images/t-1?redirect=x",
    "https://host-a.example:54322/other/t-1",
    "https://host-a.example:54322/images/../t-1",
    "https://127.0.0.1:54322/images/t-1",  # the same machine by another name is still refused
])
async def test_a_foreign_transfer_url_is_refused(fake, url):
    async with TestClient(TestServer(create_app(config()))) as c:
        r = await c.post("/v1/copies", json=spec(transfer_url=url), headers=auth(HOST_A))
        doc = await r.json()
        assert r.status in (400, 403), doc
        assert "transfer_url" in doc["detail"]
        assert (await (await c.get("/v1/copies", headers=auth(HOST_A))).json()) == {"copies": []}
    assert fake.calls == 0


async def test_a_caller_chosen_ca_is_refused_and_the_configured_one_used(fake):
    async with TestClient(TestServer(create_app(config()))) as c:
        for ca in ("/tmp/attacker-ca.pem", "/etc/pki/ovirt-engine/ca.pem", ""):
            r = await c.post("/v1/copies", json=spec(ca_file=ca), headers=auth(HOST_A))
            assert r.status == 403 and "ca_file is refused" in (await r.json())["detail"]
        assert fake.calls == 0
        r = await c.post("/v1/copies", json=spec(), headers=auth(HOST_A))
        assert r.status == 202
        job = await (await c.get(f"/v1/copies/{(await r.json())['id']}/events", headers=auth(HOST_A))).read()
        assert b'"succeeded"' in job
    assert fake.imageio == ("/etc/pki/ovirt-engine/ca.pem", False)


async def test_without_imageio_url_only_the_local_socket_serves(fake):
    async with TestClient(TestServer(create_app(config(imageio_url="")))) as c:
        r = await c.post("/v1/copies", json=spec(), headers=auth(HOST_A))
        assert r.status == 202
        await (await c.get(f"/v1/copies/{(await r.json())['id']}/events", headers=auth(HOST_A))).read()
    assert fake.imageio[1] is True  # local_only
    assert fake.control_socket == "/run/ovirt-imageio/sock"  # imageio's default control socket: NBD beside it
    # and the client then never goes to the URL's server: refused before any connection
    with pytest.raises(InvalidRequest, match="not served by this host's imageio local socket"):
        async with ImageioClient("https://127.0.0.1:1/images/t-1", local_socket="/nonexistent/sock",
                                 local_only=True):
            pass


@pytest.mark.parametrize("bad, status", [
    ({"store": "nfs://nas/export/ovault/../other"}, 403),
    ({"store": "nfs://nas/export/ovault/./../../etc"}, 403),
    ({"store": "nfs://nas/export/ovault-other"}, 403),
    ({"store": "nfs://nas//export/ovault"}, 403),
    ({"store": "/"}, 403),
    ({"vm_id": "../../etc"}, 400),
    ({"backup_id": "00000000-0000-0000-0000-000000000000/../x"}, 400),
    ({"disk_id": "../" + str(uuid.uuid4())}, 400),
])
async def test_a_path_traversing_store_or_id_is_refused(fake, bad, status):
    async with TestClient(TestServer(create_app(config()))) as c:
        r = await c.post("/v1/copies", json=spec(**bad), headers=auth(HOST_A))
        assert r.status == status, await r.text()
    assert fake.calls == 0


async def test_mutual_tls_with_per_host_certificates(tmp_path, fake):
    movers = tmp_path / "movers"
    a = mover_credentials(movers, "host-a", ["127.0.0.1"])
    b = mover_credentials(movers, "host-b", ["127.0.0.1"])
    assert a["ca"] == b["ca"] and a["token_file"] != b["token_file"]
    tok_a, tok_b = (Path(x["token_file"]).read_text().strip() for x in (a, b))
    assert tok_a != tok_b and len(tok_a) >= 32
    cfg = config(token=tok_a, tls_cert=a["cert"], tls_key=a["key"], client_ca=a["ca"], host="0.0.0.0")
    runner = web.AppRunner(create_app(cfg))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cfg.ssl_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]

    def ctx(cafile, cert=None, key=None):
        c = ssl.create_default_context(cafile=cafile)
        if cert:
            c.load_cert_chain(cert, key)
        return c

    async def get(c, token=tok_a):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://127.0.0.1:{port}/v1/copies", headers=auth(token), ssl=c) as r:
                return r.status

    try:
        # the orchestrator: its client certificate, and it checks the mover's against the CA
        assert await get(ctx(a["ca"], a["client_cert"], a["client_key"])) == 200
        # ... with host B's token: refused by the token check
        assert await get(ctx(a["ca"], a["client_cert"], a["client_key"]), tok_b) == 401
        # no client certificate, host B's own (server) certificate, a certificate of another CA
        other = tmp_path / "other"
        make_ca(other / "ca.pem", other / "ca.key", org="x", cn="other CA")
        from orchestrator.tls import issue
        issue(other / "c.pem", other / "c.key", ca_cert=other / "ca.pem", ca_key=other / "ca.key",
              names=["ovault-orchestrator"], org="x", cn="ovault-orchestrator", client=True)
        for c in (ctx(a["ca"]), ctx(a["ca"], b["cert"], b["key"]), ctx(a["ca"], other / "c.pem", other / "c.key")):
            with pytest.raises(aiohttp.ClientError):
                await get(c)
        # the orchestrator refuses a mover whose certificate its CA did not sign
        with pytest.raises(aiohttp.ClientError):
            await get(ctx(other / "ca.pem", a["client_cert"], a["client_key"]))
    finally:
        await runner.cleanup()
    assert fake.calls == 0


async def test_imageios_abstract_local_socket_is_used():
    """ovirt-imageio's local data socket is abstract ("\\0/org/ovirt/imageio"):
    there is no file to look for, and the mover must still use it, with the
    "@" spelling accepted in configuration."""
    name = f"\0/ovault-test/imageio-{uuid.uuid4().hex}"
    seen = []

    async def options(request):
        seen.append(request.method)
        return web.json_response({"features": ["extents"], "max_readers": 2, "max_writers": 2})

    app = web.Application()
    app.router.add_route("OPTIONS", "/images/{ticket}", options)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.UnixSite(runner, name)
    await site.start()
    try:
        assert config(imageio_socket="@" + name[1:]).imageio_socket == name
        c = ImageioClient("https://elsewhere.example:54322/images/t-1", local_socket=name, local_only=True)
        await c.open()
        try:
            assert c.transport == "unix" and c.options["features"] == ["extents"] and seen == ["OPTIONS"]
        finally:
            await c.close()
    finally:
        await runner.cleanup()
