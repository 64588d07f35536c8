#!/usr/bin/env python3
"""The deterministic steps of the appliance build (deploy/appliance/build.sh).

    repro.py clamp ROOT EPOCH      every mtime and atime under ROOT later than EPOCH becomes
                                   EPOCH (symbolic links themselves, not their targets)
    repro.py fstimes IMAGE EPOCH   in an ext4 image made by `mkfs.ext4 -d`: the change,
                                   access and creation times of every used inode become
                                   EPOCH (mkfs copies the source files' ctime and atime,
                                   which no `touch` can set); mtimes stay as clamped

Both take EPOCH as the build's SOURCE_DATE_EPOCH. fstimes needs dumpe2fs and debugfs
(e2fsprogs) and runs them with E2FSPROGS_FAKE_TIME=EPOCH, so the superblock's write time
is EPOCH too.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FIRST_INO = 11   # ext4's first non-reserved inode (lost+found); 2 is the root directory


def clamp(root: Path, epoch: int) -> int:
    """Clamps mtimes and atimes under root (root included) to epoch; returns how many
    entries were changed. Does not cross into other mounted file systems."""
    root_dev = os.lstat(root).st_dev
    changed = 0
    stack = [str(root)]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        if st.st_dev != root_dev:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            with os.scandir(path) as it:
                stack.extend(e.path for e in it)
        if st.st_mtime_ns > epoch * 10**9 or st.st_atime_ns > epoch * 10**9:
            mtime = min(st.st_mtime_ns, epoch * 10**9)
            os.utime(path, ns=(min(st.st_atime_ns, mtime), mtime), follow_symlinks=False)
            changed += 1
    return changed


def used_inodes(dumpe2fs_out: str) -> list[int]:
    """The inodes in use, from `dumpe2fs` output (the inode count, inodes per group and each
    group's "Free inodes:" ranges), without the reserved ones other than the root."""
    total = int(re.search(r"^Inode count:\s+(\d+)", dumpe2fs_out, re.M).group(1))
    per_group = int(re.search(r"^Inodes per group:\s+(\d+)", dumpe2fs_out, re.M).group(1))
    free: set[int] = set()
    groups = re.findall(r"^  Free inodes:[ \t]*(.*)$", dumpe2fs_out, re.M)
    if len(groups) != -(-total // per_group):
        raise ValueError(f"dumpe2fs: {len(groups)} groups listed, {total}/{per_group} expected")
    for ranges in groups:
        for part in filter(None, (p.strip() for p in ranges.split(","))):
            lo, _, hi = part.partition("-")
            free.update(range(int(lo), int(hi or lo) + 1))
    return [i for i in range(1, total + 1) if i not in free and (i == 2 or i >= FIRST_INO)]


def debugfs_script(inodes: list[int], epoch: int) -> str:
    return "".join(f"sif <{i}> {field} @{epoch}\n"
                   for i in inodes for field in ("ctime", "atime", "crtime"))


def fstimes(image: Path, epoch: int) -> int:
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch)}
    out = subprocess.run(["dumpe2fs", str(image)], check=True, capture_output=True, text=True,
                         env=env).stdout
    inodes = used_inodes(out)
    with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as cmds:
        cmds.write(debugfs_script(inodes, epoch))
        cmds.flush()
        run = subprocess.run(["debugfs", "-w", "-f", cmds.name, str(image)], capture_output=True,
                             text=True, env=env)
    errors = [ln for ln in run.stderr.splitlines() if ln and not ln.startswith("debugfs ")]
    if run.returncode or errors:
        raise SystemExit(f"repro.py: debugfs failed on {image}: {' | '.join(errors[:5])}")
    return len(inodes)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("clamp", "fstimes") or not argv[2].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    cmd, path, epoch = argv[0], Path(argv[1]), int(argv[2])
    if cmd == "clamp":
        n = clamp(path, epoch)
        print(f"appliance: {n} file times clamped to {epoch}")
    else:
        n = fstimes(path, epoch)
        print(f"appliance: inode times of {n} inodes set to {epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
