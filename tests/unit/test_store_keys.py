"""Encrypted targets from the orchestrator's side: `ovault init --encrypt`, the
key file, `ovault key show|export|import`, and a missing key named."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from imageio_ext.store import StoreKey, StoreKeyMissing
from orchestrator import cli, config
from orchestrator.service import open_store

CS = 64 * 1024


@pytest.fixture
def env(tmp_path, monkeypatch):
    target = tmp_path / "target"
    target.mkdir()
    state = tmp_path / "state"
    monkeypatch.setenv("OVAULT_TARGET__URL", str(target))
    monkeypatch.setenv("OVAULT_TARGET__CHUNK_SIZE_KIB", "64")
    cfg = config.load(env={"OVAULT_TARGET__URL": str(target), "OVAULT_TARGET__CHUNK_SIZE_KIB": "64"})
    cfg.state_dir = str(state)
    return cfg, ["--state-dir", str(state)], state / "keys" / "default.key"


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


async def _backup(store, content: bytes):
    vm, bid, disk = (str(uuid.uuid4()) for _ in range(3))
    bw = await store.begin_backup(vm, bid)
    dw = await bw.add_disk(disk, len(content))
    await dw.write(0, content)
    await dw.commit()
    await bw.publish({})
    return vm, bid, disk


def test_init_encrypt_export_paper_lose_key_import(env, capsys, tmp_path):
    cfg, state, key_file = env
    rc, out, _ = run(capsys, "init", "--encrypt", "--json", *state)
    doc = json.loads(out)
    assert rc == 0 and doc["encryption"] == "aes-256-gcm" and doc["version"] == 2
    assert os.stat(key_file).st_mode & 0o777 == 0o600 and os.stat(key_file.parent).st_mode & 0o777 == 0o700
    on_target = json.loads((tmp_path / "target" / "ovault-store.json").read_text())
    assert on_target["key_fingerprint"] == doc["key_fingerprint"]
    assert key_file.read_text().strip() not in (tmp_path / "target" / "ovault-store.json").read_text()

    import asyncio
    content = os.urandom(CS) * 2

    async def write_then_read():
        store = await open_store(cfg)
        try:
            ids = await _backup(store, content)
            r = await store.open_disk(*ids)
            assert await r.read(0, r.size) == content
            return ids
        finally:
            await store.close()
    vm, bid, disk = asyncio.run(write_then_read())

    rc, paper, _ = run(capsys, "key", "export", "--paper", *state)
    assert rc == 0 and paper.startswith("ovault store key\nfingerprint " + doc["key_fingerprint"])
    rc, out, _ = run(capsys, "key", "show", *state)
    assert rc == 0 and "present, matches" in out

    key_file.rename(tmp_path / "lost.key")  # the appliance is gone: only the paper is left
    rc, out, _ = run(capsys, "key", "show", *state)
    assert rc == 1 and "MISSING" in out
    with pytest.raises(StoreKeyMissing, match=f"no key file {key_file}"):
        asyncio.run(open_store(cfg))
    rc, _, err = run(capsys, "verify", "--no-catalog", *state)
    assert rc == 1 and "is encrypted" in err and str(key_file) in err

    wrong = tmp_path / "wrong.txt"
    from imageio_ext.store.crypto import paper_export
    wrong.write_text(paper_export(StoreKey.generate()))
    rc, _, err = run(capsys, "key", "import", str(wrong), *state)
    assert rc == 1 and "is not the store's key" in err and not key_file.exists()
    sheet = tmp_path / "sheet.txt"
    sheet.write_text(paper)
    rc, out, _ = run(capsys, "key", "import", str(sheet), *state)
    assert rc == 0 and doc["key_fingerprint"] in out and os.stat(key_file).st_mode & 0o777 == 0o600
    rc, out, _ = run(capsys, "verify", "--no-catalog", "--json", *state)
    assert rc == 0 and json.loads(out)[0]["ok"] and json.loads(out)[0]["backup_id"] == bid


def test_plain_target_stays_plain_and_has_no_key(env, capsys):
    cfg, state, key_file = env
    rc, out, _ = run(capsys, "init", "--json", *state)
    assert rc == 0 and json.loads(out)["encryption"] == "none" and not key_file.exists()
    rc, _, err = run(capsys, "key", "export", *state)
    assert rc == 1 and "not encrypted" in err
    rc, _, err = run(capsys, "init", "--encrypt", *state)
    assert rc == 1 and "exists and is not encrypted" in err  # an existing store keeps what it was created with
    rc, out, _ = run(capsys, "key", "show", *state)
    assert rc == 0 and "is not encrypted" in out


async def test_a_policy_target_gets_its_own_key_by_name(env, tmp_path):
    from types import SimpleNamespace

    from orchestrator import store_keys
    from orchestrator.policies.targets import TargetStores
    cfg, _, _ = env
    rows = {}
    for name, enc in (("vault2", True), ("plain2", False)):
        (tmp_path / name).mkdir()
        rows[uuid.uuid4()] = SimpleNamespace(name=name, url=str(tmp_path / name), options={"encrypt": True} if enc else {})

    async def get(tid):
        return rows[tid]
    catalog = SimpleNamespace(targets=SimpleNamespace(get=get))

    def stores():
        return TargetStores(catalog, main_id=None, main_store=None, open_target=lambda t: store_keys.open_target(
            cfg, t.name, t.url, encrypt=(t.options or {}).get("encrypt") is True))
    ts = stores()
    (enc_id, enc_row), (plain_id, _) = list(rows.items())
    enc, plain = await ts.store(enc_id), await ts.store(plain_id)
    content = os.urandom(CS)
    vm, bid, disk = await _backup(enc, content)
    assert enc.encrypted and not plain.encrypted
    key_file = store_keys.key_path(cfg, "vault2")
    assert key_file == tmp_path / "state" / "keys" / "vault2.key" and key_file.exists()
    assert not store_keys.key_path(cfg, "plain2").exists()
    await ts.close()
    ts = stores()  # a restart: the existing encrypted store is opened with its key file
    r = await (await ts.store(enc_id)).open_disk(vm, bid, disk)
    assert await r.read(0, r.size) == content
    await ts.close()
    key_file.unlink()
    with pytest.raises(StoreKeyMissing, match="vault2.key"):
        await stores().store(enc_id)
