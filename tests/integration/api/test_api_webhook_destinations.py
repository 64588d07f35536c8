"""Webhook destinations (orchestrator/webhooks/guard.py): loopback, link-local,
private and unique-local addresses are refused at creation (422) and again at
each delivery, after name resolution, unless `webhooks.allow_networks` lists
them. Deliveries go through the real worker and the real catalog; the only
receiver is on 127.0.0.1, and refusals are shown to happen before any
connection is attempted (no packet leaves for a non-loopback address)."""
from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from orchestrator.config import Webhooks
from orchestrator.keys import CONFIG
from orchestrator.webhooks import DeliveryWorker, guard

SECRET = "s3cret-s3cret-s3cret"
REFUSED = [("http://127.0.0.1:8080/h", "loopback"), ("http://169.254.169.254/latest/meta-data", "link-local"),
           ("http://10.0.0.1/h", "private"), ("http://[::1]:8080/h", "loopback"),
           ("http://localhost:8080/h", "loopback"), ("https://[fd00::5]/h", "unique-local"),
           ("http://192.168.1.7/h", "private"), ("http://0.0.0.0:80/h", "unspecified"),
           ("http://[::ffff:127.0.0.1]/h", "loopback")]


@pytest.mark.parametrize("url,why", REFUSED)
async def test_private_destinations_are_refused_at_creation(api, url, why):
    status, ctype, body = await api.call("POST", "/api/v1/webhooks", json={"url": url, "secret": SECRET})
    assert status == 422 and ctype == "application/problem+json", body
    assert f"is a {why} address" in body["detail"] and "webhooks.allow_networks" in body["detail"]
    assert await api.catalog.webhooks.list() == []
    # and when an existing webhook's URL is changed to one
    _, _, ok = await api.call("POST", "/api/v1/webhooks", json={"url": "https://hooks.example.com/x"})
    status, _, body = await api.call("PATCH", f"/api/v1/webhooks/{ok['id']}", json={"url": url})
    assert status == 422 and why in body["detail"]
    assert (await api.catalog.webhooks.get(uuid.UUID(ok["id"]))).url == "https://hooks.example.com/x"


async def test_allow_networks_lets_an_admin_reach_listed_networks(api):
    api.app[CONFIG].webhooks.allow_networks = ["10.0.0.0/8", "::1/128"]
    for url in ("http://10.0.0.1/h", "http://[::1]:9/h"):
        status, _, body = await api.call("POST", "/api/v1/webhooks", json={"url": url, "secret": SECRET})
        assert status == 201 and body["url"] == url
    for url in ("http://127.0.0.1/h", "http://169.254.169.254/"):  # not listed: still refused
        assert (await api.call("POST", "/api/v1/webhooks", json={"url": url, "secret": SECRET}))[0] == 422
    assert len(await api.catalog.webhooks.list()) == 2


def test_the_classification():
    none = ()
    for host in ("8.8.8.8", "2001:4860:4860::8888", "93.184.216.34"):
        guard.check_address(host, none)
    for host, why in (("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("10.0.0.1", "private"),
                      ("172.16.3.4", "private"), ("100.64.0.1", "private"), ("::1", "loopback"),
                      ("fe80::1", "link-local"), ("fc00::1", "unique-local"), ("224.0.0.1", "multicast"),
                      ("::ffff:169.254.169.254", "link-local")):
        with pytest.raises(guard.BlockedDestination, match=f"is a {why} address"):
            guard.check_address(host, none)
    guard.check_address("::ffff:10.1.2.3", guard.parse_networks(["10.0.0.0/8"]))
    with pytest.raises(Exception, match="not a network"):
        guard.parse_networks(["10.0.0.0/33"])


class MapResolver(AbstractResolver):
    """A DNS answer chosen by the test (what a rebinding attacker's server says)."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    async def resolve(self, host, port=0, family=socket.AF_INET):
        addr = self.names[host]
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        return [{"hostname": host, "host": addr, "port": port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


@pytest.fixture
async def receiver():
    """An HTTP receiver on 127.0.0.1 that records every request it gets."""
    got = []

    async def hook(request):
        got.append(await request.read())
        return web.Response(status=200, text="x" * 200_000)  # a long answer: read bounded, not shown

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield port, got
    await runner.cleanup()


async def _deliver(catalog, url, *, allow=(), names=None):
    """Create a webhook row (the API's creation check is bypassed: the address
    changed after creation), queue a test event, run the worker until the
    attempt is recorded; the attempt's row."""
    w = await catalog.webhooks.create(url, SECRET, ["*"])
    _, did = await catalog.webhooks.enqueue_test(w.id, {"webhook_id": str(w.id)})
    cfg = Webhooks(timeout=3, max_attempts=1, poll_interval=0.1, allow_networks=list(allow))
    worker = DeliveryWorker(catalog, cfg, resolver=MapResolver(names or {}))
    await worker.start()
    try:
        async with asyncio.timeout(10):
            while not (rows := await catalog.webhooks.list_attempts(did)):
                await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    (row,) = rows
    return row


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "rebind.example.com"])
async def test_loopback_is_refused_at_delivery_unless_allowed(catalog, receiver, host):
    port, got = receiver
    names = {"rebind.example.com": "127.0.0.1"}  # public when created, loopback when delivered
    row = await _deliver(catalog, f"http://{host}:{port}/hook", names=names)
    assert row["outcome"] == "gave_up" and row["status_code"] is None
    assert "is a loopback address" in row["error"] and len(row["error"]) <= 300
    assert got == []  # refused before connecting: the receiver heard nothing
    if host == "[::1]":
        return  # the receiver listens on IPv4 only
    row = await _deliver(catalog, f"http://{host}:{port}/hook", names=names, allow=["127.0.0.0/8"])
    assert (row["outcome"], row["status_code"], row["error"]) == ("delivered", 200, None)
    assert len(got) == 1 and b'"type":"webhook.test"' in got[0]


@pytest.mark.parametrize("addr", ["169.254.169.254", "10.0.0.1", "fd00::1"])
async def test_non_loopback_destinations_are_refused_before_any_connection(catalog, addr, monkeypatch):
    """The check runs on the resolved addresses, before the connector connects:
    connecting at all fails this test (so it never sends to these addresses)."""
    async def never(*a, **kw):
        raise AssertionError("a connection was attempted")
    monkeypatch.setattr(guard.GuardedConnector, "_wrap_create_connection", never)
    literal = f"[{addr}]" if ":" in addr else addr
    for url, names in ((f"http://{literal}/hook", {}), ("http://meta.example.com/hook", {"meta.example.com": addr})):
        row = await _deliver(catalog, url, names=names)
        assert row["outcome"] == "gave_up" and "allow_networks" in row["error"], row
        assert "a connection was attempted" not in row["error"]
