"""qemu command lines for the sandbox guests, the KVM-or-TCG choice, and the
short maintenance boots (build a disk, write files offline, fsck).

A guest boots its kernel directly (`-kernel/-initrd/-append`: no bootloader);
the initramfs finds the file system labelled `ovault-root` and starts it.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

QEMU = "qemu-system-x86_64"
MEMORY_MIB = 256
_accel: str | None = None


def _kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def accel(image=None) -> str:
    """`kvm` when /dev/kvm is there and a guest really boots with it, else `tcg`.

    Some nested hosts expose /dev/kvm but their KVM guests stall right after
    the kernel is unpacked: a probe boot (fsck mode on no disk, which answers
    at once) with a timeout decides, once per process and cached beside the
    image. `OVAULT_GUEST_ACCEL=kvm|tcg` forces the choice."""
    global _accel
    forced = os.environ.get("OVAULT_GUEST_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if _accel:
        return _accel
    if not _kvm_usable():
        _accel = "tcg"
        return _accel
    if image is None:
        from .build import ensure_image
        image = ensure_image()
    mark = image.dir / f"accel-{os.uname().release}-{_boot_id()}"
    if mark.exists():
        _accel = mark.read_text().strip()
        return _accel
    try:
        out = _boot_once(image, "fsck", [], accel="kvm", timeout=20)
        _accel = "kvm" if "OVAULT-RESULT" in out else "tcg"
    except (subprocess.TimeoutExpired, RuntimeError):  # stalls, or qemu refuses the vCPU
        _accel = "tcg"
    try:
        mark.write_text(_accel + "\n")
    except OSError:
        pass
    return _accel


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "0"


def machine_args(acc: str) -> list[str]:
    cpu = "host" if acc == "kvm" else "max"
    return [QEMU, "-machine", f"q35,accel={acc}", "-cpu", cpu, "-smp", "1", "-m", str(MEMORY_MIB),
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none"]


def kernel_args(image, append: str) -> list[str]:
    # no_timer_check: under a loaded TCG host the kernel's IO-APIC timer check can
    # miss its ticks and panic at boot ("timer doesn't work through Interrupt-remapped
    # IO-APIC"); the check proves nothing for an emulated timer.
    return ["-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", f"console=ttyS0 quiet panic=-1 no_timer_check {append}".strip()]


def _boot_once(image, mode: str, drives: list[tuple[Path, str]], accel: str, timeout: float,
               extra: str = "") -> str:
    """Boot in a maintenance mode with virtio-blk drives (vda, vdb, ...); the
    console output (the guest powers itself off when done)."""
    argv = machine_args(accel) + kernel_args(image, f"ovault.mode={mode} {extra}")
    argv += ["-no-reboot"]
    for i, (path, fmt) in enumerate(drives):
        argv += ["-blockdev", f"driver=file,filename={path},node-name=f{i},cache.direct=off",
                 "-blockdev", f"driver={fmt},file=f{i},node-name=d{i}",
                 "-device", f"virtio-blk-pci,drive=d{i}"]
    with tempfile.NamedTemporaryFile("w+", suffix=".console") as log:
        argv += ["-serial", f"file:{log.name}"]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
        out = Path(log.name).read_text(errors="replace")
        if p.returncode != 0:
            raise RuntimeError(f"qemu failed ({p.returncode}): {err.decode(errors='replace')[-1000:]}")
        return out


def maintenance_boot(image, mode: str, disk: Path, fmt: str, tar: Path | None = None,
                     extra: str = "", timeout: float = 120) -> str:
    """Run one maintenance boot on `disk` (vda), with `tar` as vdb; the
    console text (look for the `OVAULT-RESULT` lines)."""
    drives = [(Path(disk), fmt)] + ([(Path(tar), "raw")] if tar else [])
    acc = accel(image)
    t0 = time.monotonic()
    out = _boot_once(image, mode, drives, acc, timeout, extra)
    return out + f"\n(maintenance boot {mode}: {time.monotonic() - t0:.1f} s, {acc})\n"


def results(console: str) -> list[str]:
    return [line.split("OVAULT-RESULT ", 1)[1].strip() for line in console.splitlines()
            if "OVAULT-RESULT " in line]
