"""`ovault backups ID`: one backup, its consistency spelled out."""
from __future__ import annotations

from orchestrator.cli.client import format_backup

B = {"id": "7a0c0b8e-1111-4c6e-9d7e-0a1b2c3d4e5f", "vm_id": "vm-1", "vm_name": "linux-ext4",
     "created_at": "2026-12-01T11:00:00Z", "completed_at": "2026-12-01T11:01:00Z",
     "status": "succeeded", "mode": "incremental", "method": "cbt", "consistency": "filesystem",
     "parent_id": "p-1", "checkpoint_id": "cp-2", "size_bytes": 1 << 30, "new_bytes": 3 << 20,
     "protected": False, "fallback_reason": None, "error": None, "damaged": False,
     "disks": [{"disk_id": "d-1", "alias": "linux-ext4_boot", "provisioned_size": 1 << 30,
                "format": "cow", "bytes_read": 4 << 20, "bytes_written": 3 << 20}]}


def test_a_filesystem_consistent_backup():
    out = format_backup(B).splitlines()
    assert "consistency: filesystem (the guest's file systems were frozen)" in out
    assert "mode:        incremental" in out and "checkpoint:  cp-2" in out
    assert out[-1].startswith("disk:        linux-ext4_boot d-1")
    assert not any(line.startswith(("error:", "fallback:")) for line in out)


def test_crash_running_and_damaged():
    assert "consistency: crash (the guest was not frozen)" in format_backup(
        {**B, "consistency": "crash"}).splitlines()
    running = format_backup({**B, "status": "running", "consistency": None, "disks": []})
    assert "consistency: -" in running.splitlines()
    assert "DAMAGED" in format_backup({**B, "damaged": True})
