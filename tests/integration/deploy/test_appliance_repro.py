"""The appliance build's deterministic pieces, without building the image (that takes
minutes: `./dev appliance --check-reproducible` does it twice and compares):
the OVA packer writes the same bytes twice; `mkfs.ext4 -d` + repro.py give the same file
system from two trees that differ only in their files' change and access times; the build's
cache keeps the base in use and the images used last, and says what it removed."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
APPLIANCE = REPO / "deploy/appliance"
EPOCH = 1_700_000_000
UUID = "0b5e7a11-0a11-4c0e-9a11-0a11a1ce0001"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ova_packer_writes_identical_bytes(tmp_path):
    img = tmp_path / "a.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "1G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 0 1M", str(img)], check=True,
                   capture_output=True)
    outs = []
    for n in (1, 2):
        out = tmp_path / f"{n}.ova"
        subprocess.run([sys.executable, str(APPLIANCE / "ova.py"), "--mtime", str(EPOCH), str(img),
                        str(out)], check=True, capture_output=True)
        outs.append(out.read_bytes())
        time.sleep(1.1)   # a packer using the clock would differ now
    assert outs[0] == outs[1]


def make_tree(root: Path, salt: str) -> None:
    """The same names, contents, modes and mtimes each time; ctimes and atimes differ
    (a chmod, a read) and a deleted file leaves its trace in the directory."""
    (root / "etc/ssh").mkdir(parents=True)
    (root / "opt/venv").mkdir(parents=True)
    (root / "etc/hostname").write_text("ovault\n")
    (root / "opt/venv/mod.py").write_text("x = 1\n" * 500)
    (root / f"opt/venv/tmp-{salt}").write_text("gone")
    (root / f"opt/venv/tmp-{salt}").unlink()
    os.symlink("../opt/venv/mod.py", root / "etc/link")
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin prohibit-password\n")
    os.chmod(root / "etc/hostname", 0o644)
    (root / "opt/venv/mod.py").read_bytes()
    # Newer than the build's time, as files written by customize.sh are.
    os.utime(root / "etc/hostname", (EPOCH + 50_000, EPOCH + 50_000))


def build_fs(tmp_path: Path, name: str) -> Path:
    root = tmp_path / f"root-{name}"
    make_tree(root, name)
    subprocess.run([sys.executable, str(APPLIANCE / "repro.py"), "clamp", str(root), str(EPOCH)],
                   check=True, capture_output=True)
    image = tmp_path / f"{name}.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-U", UUID, "-E", f"root_owner=0:0,hash_seed={UUID}",
                    "-O", "^metadata_csum_seed,^orphan_file", "-d", str(root), str(image), "32M"],
                   check=True, capture_output=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": str(EPOCH)})
    subprocess.run([sys.executable, str(APPLIANCE / "repro.py"), "fstimes", str(image), str(EPOCH)],
                   check=True, capture_output=True)
    return image


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                    reason="e2fsprogs missing")
def test_mkfs_of_two_trees_differing_in_ctimes_is_identical(tmp_path):
    a = build_fs(tmp_path, "a")
    time.sleep(1.1)
    b = build_fs(tmp_path, "b")
    assert sha(a) == sha(b)
    fsck = subprocess.run(["e2fsck", "-fn", str(a)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    stat = subprocess.run(["debugfs", "-R", "stat /etc/hostname", str(a)], capture_output=True,
                          text=True, check=True).stdout
    # Every time of a file written after the build's time is the build's time.
    assert stat.count(f"0x{EPOCH:08x}:00000000") == 4, stat


@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap missing (the base key)")
def test_cache_keeps_the_base_in_use_and_the_images_used_last(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out/ovault-appliance.qcow2"
    env = {**os.environ, "OVAULT_APPLIANCE_CACHE": str(cache), "OVAULT_APPLIANCE_OUT": str(out)}
    keys = subprocess.run(["bash", str(APPLIANCE / "build.sh"), "--print-keys"], env=env, check=True,
                          capture_output=True, text=True).stdout.split()
    key, base = (kv.split("=")[1] for kv in keys[:2])
    # The current image (a cache hit: only its two files are looked at), four older ones used
    # at known times, the base in use and an older one, a base being written by another build.
    for d, used in [(key, None), ("a" * 16, 400), ("b" * 16, 300), ("c" * 16, 200), ("d" * 16, 100)]:
        (cache / d).mkdir(parents=True)
        (cache / d / "ovault-appliance.qcow2").write_bytes(d.encode())
        (cache / d / "ovault-appliance.ova").write_bytes(d.encode())
        if used:
            (cache / d / "last-used").touch()
            os.utime(cache / d / "last-used", (EPOCH + used, EPOCH + used))
    for d in (f"base-{base}", "base-0123456789abcdef", "base-fedcba9876543210"):
        (cache / d).mkdir()
        (cache / d / "debian-root.tar").write_bytes(b"tar")
    (cache / "base-fedcba9876543210/debian-root.tar.tmp.123").write_bytes(b"partial")
    # Work directories: of a killed build (no such pid) and of a running one (this process).
    (cache / "work-0123456789abcdef.999999999/root").mkdir(parents=True)
    (cache / f"work-0123456789abcdef.{os.getpid()}/root").mkdir(parents=True)
    # Snapshots of reproducibility checks: one a killed run left two days ago, one running.
    for d, age in (("repro-old123", 2 * 86400), ("repro-new456", 60)):
        (cache / d / "out-a").mkdir(parents=True)
        os.utime(cache / d, (time.time() - age, time.time() - age))
    run = subprocess.run(["bash", str(APPLIANCE / "build.sh")], env=env, check=True,
                         capture_output=True, text=True)
    assert out.read_bytes() == key.encode()
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [key, "a" * 16, f"base-{base}", "base-fedcba9876543210",
         f"work-0123456789abcdef.{os.getpid()}", "repro-new456"])
    removed = run.stdout.split("removed ")[1].split()
    assert sorted(removed) == sorted(["base-0123456789abcdef", "b" * 16, "c" * 16, "d" * 16,
                                      "work-0123456789abcdef.999999999", "repro-old123"])
    assert (cache / key / "last-used").stat().st_mtime > time.time() - 60
