"""The manifest's consistency (in its meta): what the backup recorded, and
`crash` for manifests written before it was recorded."""
from __future__ import annotations

import json

import pytest

from imageio_ext.store.manifest import BackupInfo

VM, BID = "vm-1", "5f1c2a57-8d3e-4a55-9a57-1b3a0c7c2e11"


def manifest(meta: dict) -> bytes:
    return json.dumps({"format": "ovault-manifest", "version": 1, "vm_id": VM, "backup_id": BID,
                       "parent_id": None, "created": "2026-12-01T00:00:00Z", "disks": [],
                       "meta": meta}).encode()


@pytest.mark.parametrize("meta, expected", [
    ({"consistency": "filesystem", "method": "cbt"}, "filesystem"),
    ({"consistency": "crash"}, "crash"),
    ({"method": "cbt"}, "crash"),            # written before consistency was recorded
    ({"consistency": "application"}, "crash"),  # not a value ovault writes
])
def test_consistency_read_from_the_manifest(meta, expected):
    info = BackupInfo.from_json(manifest(meta), "m.json", vm_id=VM, backup_id=BID)
    assert info.consistency == expected
    # Round trip: the field rides in meta, unchanged.
    again = BackupInfo.from_json(info.to_json(), "m.json", vm_id=VM, backup_id=BID)
    assert again.meta == meta and again.consistency == expected
