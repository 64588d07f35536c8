"""POST /api/v1/targets {"encrypt": true}: recorded on the target, fixed at creation,
and honoured when the service first initialises that target's store."""
from __future__ import annotations

import json

from orchestrator import service
from orchestrator.config import Config


async def test_encrypt_is_chosen_at_creation_only(api, tmp_path):
    status, _, t = await api.call("POST", "/api/v1/targets",
                                  json={"name": "vault", "url": str(tmp_path / "vault"), "encrypt": True})
    assert status == 201 and t["options"] == {"encrypt": True}
    status, _, plain = await api.call("POST", "/api/v1/targets", json={"name": "plain", "url": "/srv/plain"})
    assert status == 201 and plain["options"] == {}
    for bad in ({"encrypt": "yes"}, {"options": {"encrypt": True}}):
        status, _, body = await api.call("POST", "/api/v1/targets", json={"name": "x", "url": "/srv/x", **bad})
        assert status == 422, body
    status, _, body = await api.call("PATCH", f"/api/v1/targets/{plain['id']}", json={"options": {"encrypt": True}})
    assert status == 422 and "chosen when a target is created" in body["detail"]
    status, _, body = await api.call("PATCH", f"/api/v1/targets/{t['id']}", json={"options": {"encrypt": True, "note": "x"}})
    assert status == 200 and body["options"] == {"encrypt": True, "note": "x"}

    # A replica configured for that target creates an encrypted store with a key file.
    (tmp_path / "vault").mkdir()
    cfg = Config(state_dir=str(tmp_path / "state2"))
    cfg.target.url, cfg.target.name = str(tmp_path / "vault"), "vault"
    store = await service.open_store(cfg, encrypt=t["options"].get("encrypt") is True)
    try:
        assert store.encrypted and store.key is not None
    finally:
        await store.close()
    doc = json.loads((tmp_path / "vault" / "ovault-store.json").read_text())
    assert doc["encryption"] == "aes-256-gcm" and (tmp_path / "state2" / "keys" / "vault.key").exists()
