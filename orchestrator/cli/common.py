"""What every `ovault` command module shares: the error, the option groups, the config."""
from __future__ import annotations

import argparse
import os


class CliError(Exception):
    """A failure the CLI reports as one line (``ovault: ...``) and exit status 1."""


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """How a client command finds a running `ovault serve` (see `api.Api`)."""
    parser.add_argument("--server", default=os.environ.get("OVAULT_SERVER"), help="orchestrator URL")
    # The token is read from a file when it can be: a command line is visible to
    # every user of the machine (ps, /proc), a 0600 file is not.
    tok = parser.add_mutually_exclusive_group()
    tok.add_argument("--token-file", metavar="PATH",
                     help="read the API token from PATH (or OVAULT_TOKEN_FILE); preferred over --token")
    tok.add_argument("--token", help="API token (or OVAULT_TOKEN); visible to other users, prefer --token-file")
    parser.add_argument("--ca-file", default=os.environ.get("OVAULT_CA_FILE"))
    parser.add_argument("--state-dir", help="find the server through STATE_DIR/client.json")
    parser.add_argument("--sandbox", help="the orchestrator serving sandbox DIR")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_config_options(parser: argparse.ArgumentParser, *, json_output: bool = True) -> None:
    """The service's own configuration, for commands that work without a server."""
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--sandbox", help="use the sandbox in DIR (reads DIR/sandbox.json)")
    parser.add_argument("--state-dir", help="state directory (embedded database, TLS, tokens)")
    if json_output:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def load_config(args):
    from ..config import load
    cfg = load(getattr(args, "config", None), sandbox=getattr(args, "sandbox", None))
    if getattr(args, "state_dir", None):
        cfg.state_dir = args.state_dir
    return cfg


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)
