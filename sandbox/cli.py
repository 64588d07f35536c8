"""`ovault sandbox up|down`: run the lab in the foreground or detached."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .lab import GiB, Lab, LabConfig
from .proc import Registry


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def add_arguments(sub):
    up = sub.add_parser("up", help="start a complete oVirt lab on this machine")
    up.add_argument("--dir", required=True, type=Path, help="state directory (sandbox.json goes here)")
    up.add_argument("--hosts", type=int, default=2, help="simulated hosts (default 2)")
    up.add_argument("--vms", type=int, default=3, help="sample VMs (default 3)")
    up.add_argument("--disk-size", type=parse_size, default=GiB,
                    help="virtual size of the boot disks (default 1G)")
    up.add_argument("--port", type=int, default=0, help="engine HTTPS port (default: any free)")
    up.add_argument("--no-nfs", action="store_true", help="do not start the NFS target")
    up.add_argument("--address", default="127.0.0.1", help="this machine's address in transfer "
                    "URLs (10.0.2.2 for clients in a qemu VM on user-mode networking)")
    up.add_argument("--detach", action="store_true", help="return once ready, keep running")
    up.add_argument("--guests", default="", help="comma-separated layouts of sample VMs that run "
                    "real qemu guests: ext4,xfs,lvm (default none; see docs/sandbox.md)")
    down = sub.add_parser("down", help="stop a detached sandbox")
    down.add_argument("--dir", required=True, type=Path)


def run(args) -> int:
    if args.sandbox_cmd == "down":
        return down(args.dir)
    if args.detach:
        return detach(args)
    cfg = LabConfig(args.dir, hosts=args.hosts, vms=args.vms, disk_size=args.disk_size,
                    nfs=not args.no_nfs, port=args.port, address=args.address,
                    guests=tuple(g for g in args.guests.split(",") if g))
    if cfg.hosts < 1 or cfg.vms < 0:
        print("ovault sandbox: --hosts must be >= 1 and --vms >= 0", file=sys.stderr)
        return 2
    return asyncio.run(_foreground(cfg))


async def _foreground(cfg: LabConfig) -> int:
    lab = Lab(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    (cfg.dir).mkdir(parents=True, exist_ok=True)
    (cfg.dir / "sandbox.pid").write_text(str(os.getpid()))
    try:
        info = await lab.start()
        print(json.dumps({"ready": True, "sandbox": str(cfg.dir / "sandbox.json"),
                          "engine": info["engine"]["api"]}), flush=True)
        await stop.wait()
    finally:
        await lab.stop()
        (cfg.dir / "sandbox.pid").unlink(missing_ok=True)
    return 0


def detach(args) -> int:
    argv = [sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(args.dir),
            "--hosts", str(args.hosts), "--vms", str(args.vms), "--disk-size", str(args.disk_size),
            "--port", str(args.port), "--guests", args.guests, "--address", args.address] + (
                ["--no-nfs"] if args.no_nfs else [])
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "sandbox.json").unlink(missing_ok=True)
    log = open(args.dir / "sandbox.log", "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (args.dir / "sandbox.json").exists():
            print(str(args.dir / "sandbox.json"))
            return 0
        if p.poll() is not None:
            print(f"ovault sandbox: failed to start; see {args.dir / 'sandbox.log'}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    p.terminate()
    print("ovault sandbox: timed out starting", file=sys.stderr)
    return 1


def down(d: Path) -> int:
    pidfile = d / "sandbox.pid"
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(300):
                os.kill(pid, 0)
                time.sleep(0.1)
        except (ProcessLookupError, ValueError):
            pass
    n = Registry(d / "pids").kill_all()
    (d / "sandbox.json").unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    print(f"sandbox in {d} is down" + (f" (reaped {n} stray processes)" if n else ""))
    return 0
