"""The `ovault` command line.

Server side: `serve`, `token` (`server`). Client side: `backup`, `restore`,
`backups`, `jobs`, `cancel` talk to a running `ovault serve` over its REST
API (`client`). Target side: `verify`, `gc`, `export`, `mount`, `import`
work on the backup target directly (`target`); `init` and `key` create the
store and handle its key (`keys`). `completion` prints a shell
completion script; ``--version`` the installed version.

Each command module has ``register(sub)``, which adds its parsers to the
``argparse`` sub-parsers and gives each one a handler with
``set_defaults(func=handler)``; a handler takes the parsed arguments and
returns the exit status. A new command group is one module with
``register`` plus its name in `COMMANDS`. Imports go one way: this package
imports the command modules, they import only `common` and their helpers.

The development commands (`sandbox up|down`, `demo`) belong to the
simulator, which the wheel does not ship: they register themselves from
`sandbox.commands` when the `sandbox` package is there (a checkout).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from imageio_ext.version import version

from .. import logs
from .common import CliError

# Command modules of this package, in help order.
COMMANDS = ("server", "client", "policy", "target", "keys", "files", "catalog", "completion")
# Modules outside the product that may add commands when importable.
DEV_COMMANDS = "sandbox.commands"


def _dev_commands():
    """`sandbox.commands` when the simulator is importable (or beside this checkout), else None."""
    root = str(Path(__file__).resolve().parents[2])
    for attempt in range(2):
        try:
            return importlib.import_module(DEV_COMMANDS)
        except ModuleNotFoundError as e:
            if e.name not in ("sandbox", DEV_COMMANDS):
                raise
        # An editable install maps only the product packages; the checkout
        # they come from still has the simulator next to them.
        if attempt or root in sys.path or not (Path(root) / "sandbox" / "commands.py").is_file():
            return None
        sys.path.append(root)
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovault", description="Backup and recovery for oVirt")
    p.add_argument("--version", action="version", version=f"ovault {version()}")
    p.set_defaults(root_parser=p)  # for `completion`, which describes the whole tree
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    dev = _dev_commands()
    if dev is not None:
        dev.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # A command may ask for quiet logs (the demo: its output is its report).
    level = getattr(args, "log_level", None)
    logs.configure(level=level if level and "OVAULT_LOG_LEVEL" not in os.environ else None)
    try:
        return args.func(args)
    except CliError as e:
        print(f"ovault: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a readable message, never a traceback, for expected failures
        from ..errors import OvaultError
        if isinstance(e, OvaultError):
            print(f"ovault: {e}", file=sys.stderr)
            return 1
        raise
