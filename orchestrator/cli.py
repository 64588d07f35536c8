"""The `ovault` command line."""
from __future__ import annotations

import argparse
import sys

from . import logs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovault", description="Backup and recovery for oVirt")
    sub = p.add_subparsers(dest="cmd", required=True)
    sb = sub.add_parser("sandbox", help="a complete oVirt lab on this machine")
    sbsub = sb.add_subparsers(dest="sandbox_cmd", required=True)
    # The sandbox is a development and evaluation tool; only the CLI reaches it.
    from sandbox import cli as sandbox_cli
    sandbox_cli.add_arguments(sbsub)
    demo = sub.add_parser("demo", help="bring up the sandbox and show ovault working")
    demo.add_argument("--dir", default="demo", help="state directory (default ./demo)")
    demo.add_argument("--exit", action="store_true", help="stop once the report is printed")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    if args.cmd == "sandbox":
        from sandbox import cli as sandbox_cli
        return sandbox_cli.run(args)
    if args.cmd == "demo":
        from . import demo
        return demo.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
