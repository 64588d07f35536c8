"""The orchestrator's target store: a new target takes the configured chunk
size, an existing store keeps its own whatever the configuration says."""
from __future__ import annotations

import json

from orchestrator import config
from orchestrator.service import open_store


async def test_new_target_takes_configured_chunk_size_existing_keeps_its_own(tmp_path):
    cfg = config.load(env={"OVAULT_TARGET__URL": str(tmp_path), "OVAULT_TARGET__CHUNK_SIZE_KIB": "1024"})
    store = await open_store(cfg)
    try:
        assert store.chunk_size == 1 << 20
    finally:
        await store.close()
    assert json.loads((tmp_path / "ovault-store.json").read_text())["chunk_size"] == 1 << 20
    cfg.target.chunk_size_kib = 4096  # changed later: the store is not re-initialised
    store = await open_store(cfg)
    try:
        assert store.chunk_size == 1 << 20
    finally:
        await store.close()
