"""How long `ovault sandbox up` takes to be ready, and that `down` leaves nothing.

    .venv/bin/python bench/sandbox_startup.py [--runs 3] [--hosts 2] [--vms 3]

Budget (issue 2): 2 hosts and 3 VMs ready in under 15 s on the 2-core machine.
There is no reference tool for this one: the number is compared with the budget.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def leftovers(d: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(d)], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "pgrep" not in l]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--vms", type=int, default=3)
    ap.add_argument("--no-nfs", action="store_true", help="leave the NFS server out")
    args = ap.parse_args()
    times = []
    for i in range(args.runs):
        d = Path(tempfile.mkdtemp(prefix="ovault-bench-sb-"))
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(d),
                        "--hosts", str(args.hosts), "--vms", str(args.vms), "--detach"]
                       + (["--no-nfs"] if args.no_nfs else []),
                       cwd=ROOT, check=True, capture_output=True)
        times.append(time.monotonic() - t0)
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "sandbox", "down", "--dir", str(d)],
                       cwd=ROOT, check=True, capture_output=True)
        left = leftovers(d)
        print(f"run {i + 1}: ready in {times[-1]:.2f} s; processes left after down: {len(left)}")
        if left:
            print("\n".join(left))
            return 1
    print(f"sandbox up ({args.hosts} hosts, {args.vms} VMs): median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s (budget 15 s: {max(times) / 15:.0%} of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
