"""The store key of an encrypted store reaches the mover with each copy and goes nowhere else."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext.copy import CopyResult
from imageio_ext.mover import MoverConfig, create_app
from imageio_ext.mover import jobs as jobs_mod
from imageio_ext.store import Store, StoreKey
from orchestrator.jobs.adapters import _key_channel_ok

TOKEN = "k" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def setup(tmp_path, monkeypatch, caplog):
    target = tmp_path / "target"
    target.mkdir()
    key = StoreKey.generate()
    async with await Store.open(str(target), create=True, key=key, encrypt=True):
        pass
    seen = {}

    async def fake_copy(s, *, store, **_):
        seen["key"] = store.key
        await store.put_chunk(b"secret data" * 100)  # needs the key
        return CopyResult(op=s.op, vm_id=s.vm_id, backup_id=s.backup_id, disk_id=s.disk_id, size=s.size,
                          bytes_read=s.size, bytes_written=0, new_chunks=1, index_sha256="ab" * 32)

    monkeypatch.setattr(jobs_mod, "run_copy", fake_copy)
    cfg = MoverConfig.load(env={}, overrides={"token": TOKEN, "allowed_stores": str(target),
                                              "imageio_url": "https://h:54322", "events_interval": 0.05})
    async with TestClient(TestServer(create_app(cfg))) as c:
        yield c, str(target), key, seen


def _spec(store, **kw):
    return dict(op="backup", transfer_url="https://h:54322/images/abc", store=store, vm_id=str(uuid.uuid4()),
                backup_id=str(uuid.uuid4()), disk_id=str(uuid.uuid4()), size=8 << 20, **kw)


async def _final(client, cid):
    for _ in range(200):
        doc = await (await client.get(f"/v1/copies/{cid}", headers=AUTH)).json()
        if doc["state"] in ("succeeded", "failed", "canceled"):
            return doc
        await asyncio.sleep(0.02)
    raise AssertionError("copy did not end")


async def test_key_used_for_the_copy_and_never_returned_or_logged(setup, caplog):
    client, store, key, seen = setup
    r = await client.post("/v1/copies", json=_spec(store, store_key=key.hex()), headers=AUTH)
    assert r.status == 202
    text = await r.text()
    doc = await _final(client, json.loads(text)["id"])
    assert doc["state"] == "succeeded" and seen["key"] == key
    listing = await (await client.get("/v1/copies", headers=AUTH)).text()
    for out in (text, json.dumps(doc), listing, caplog.text):
        assert key.hex() not in out


async def test_missing_wrong_or_malformed_key(setup):
    client, store, key, _ = setup
    r = await client.post("/v1/copies", json=_spec(store, store_key="zz" * 32), headers=AUTH)
    assert r.status == 400 and "store_key must be 64 hex digits" in (await r.json())["detail"]
    other = StoreKey.generate()
    r = await client.post("/v1/copies", json=_spec(store, store_key=other.hex()), headers=AUTH)
    doc = await _final(client, (await r.json())["id"])
    assert doc["state"] == "failed" and doc["error"]["code"] == "store_key_wrong"
    assert other.fingerprint in doc["error"]["message"] and other.hex() not in json.dumps(doc)
    r = await client.post("/v1/copies", json=_spec(store), headers=AUTH)  # no key at all
    doc = await _final(client, (await r.json())["id"])
    assert doc["state"] == "failed" and doc["error"]["code"] == "store_key_missing"
    assert key.fingerprint in doc["error"]["message"]


def test_key_sent_only_over_tls_or_to_this_host():
    assert _key_channel_ok("https://host1:54323")
    assert _key_channel_ok("http://127.0.0.1:8000") and _key_channel_ok("http://[::1]:8000")
    assert not _key_channel_ok("http://host1:54323")


async def test_the_orchestrator_sends_the_key_of_its_encrypted_store(setup, tmp_path):
    import aiohttp

    from orchestrator.errors import MoverError
    from orchestrator.jobs.adapters import MoverPort
    client, store_url, key, seen = setup
    base = str(client.make_url("")).rstrip("/")
    assert base.startswith("http://127.0.0.1:")
    async with await Store.open(store_url, key=key) as st, aiohttp.ClientSession() as session:
        port = MoverPort(store=st, store_url=store_url, movers={"h1": base}, token=TOKEN, ca_file=None,
                         requests=1, session=session, imageio_ca=None)

        async def progress(done, total):
            pass
        args = dict(transfer_url="https://h:54322/images/abc", vm_id=str(uuid.uuid4()),
                    backup_id=str(uuid.uuid4()), disk_id=str(uuid.uuid4()), parent_backup_id=None,
                    incremental=False, size=8 << 20, progress=progress)
        res = await port.backup_disk(host_id="h1", copy_id=str(uuid.uuid4()), **args)
        assert res["new_chunks"] == 1 and seen["key"] == key
        port.movers = {"h1": base.replace("127.0.0.1", "mover.example")}  # plain HTTP off this host
        with pytest.raises(MoverError, match="refusing to send the store key"):
            await port.backup_disk(host_id="h1", copy_id=str(uuid.uuid4()), **args)


async def test_mover_cli_opens_an_encrypted_store_with_a_key_file(setup, tmp_path):
    from imageio_ext.mover_cli import _open_store
    from imageio_ext.store import StoreKeyInvalid
    from imageio_ext.store.crypto import write_key_file
    _, store_url, key, _ = setup
    write_key_file(tmp_path / "k", key)
    st = await _open_store(store_url, str(tmp_path / "k"))
    try:
        assert st.key == key
    finally:
        await st.close()
    with pytest.raises(StoreKeyInvalid, match="does not exist"):
        await _open_store(store_url, str(tmp_path / "nope"))
