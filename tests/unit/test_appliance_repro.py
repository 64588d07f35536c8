"""deploy/appliance/repro.py's pure parts: which inodes of a `mkfs.ext4 -d` image get their
times fixed (from dumpe2fs's listing) and the debugfs commands that do it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/appliance/repro.py"


@pytest.fixture(scope="module")
def repro():
    spec = importlib.util.spec_from_file_location("appliance_repro", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DUMPE2FS = """\
Inode count:              64
Inodes per group:         16
Group 0: (Blocks 1-8192) csum 0xf594
  Free inodes: 16
Group 1: (Blocks 8193-16384) csum 0x0ad5
  Free inodes: 
Group 2: (Blocks 16385-24576) csum 0xdbc9 [INODE_UNINIT, BLOCK_UNINIT]
  Free inodes: 33-36, 39, 41-48
Group 3: (Blocks 24577-32768) csum 0x0ad4 [INODE_UNINIT]
  Free inodes: 49-64
"""


def test_used_inodes_are_the_complement_of_the_free_ranges(repro):
    # Reserved 1 and 3..10 are left out; the root (2) and lost+found (11) are in; a full
    # group (nothing after "Free inodes:") is all used.
    assert repro.used_inodes(DUMPE2FS) == [2, *range(11, 16), *range(17, 33), 37, 38, 40]


def test_a_group_missing_from_the_listing_is_an_error(repro):
    cut = DUMPE2FS[:DUMPE2FS.index("Group 3")]
    with pytest.raises(ValueError, match="3 groups listed"):
        repro.used_inodes(cut)


def test_debugfs_script_sets_three_times_per_inode(repro):
    assert repro.debugfs_script([2, 12], 1700000000).splitlines() == [
        "sif <2> ctime @1700000000", "sif <2> atime @1700000000", "sif <2> crtime @1700000000",
        "sif <12> ctime @1700000000", "sif <12> atime @1700000000", "sif <12> crtime @1700000000",
    ]


def test_clamp_lowers_later_times_only(repro, tmp_path):
    import os
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("a")
    new.write_text("b")
    (tmp_path / "link").symlink_to("missing-target")
    os.utime(old, (1_500_000_000, 1_500_000_000))
    os.utime(new, (1_900_000_000, 1_900_000_000))
    changed = repro.clamp(tmp_path, 1_700_000_000)
    assert os.lstat(old).st_mtime == 1_500_000_000
    assert os.lstat(new).st_mtime == 1_700_000_000
    assert os.lstat(tmp_path / "link").st_mtime == 1_700_000_000   # the link, not a target
    assert os.lstat(tmp_path).st_mtime == 1_700_000_000
    assert changed == 3    # new, link, the directory itself
