"""The `ovault` command line.

Server side: `serve`, `token`, `sandbox`, `demo`. Client side (`backup`,
`restore`, `backups`, `jobs`, `cancel`) talks to a running `ovault serve`
over its REST API; it finds it through `--server/--token` (or
OVAULT_SERVER / OVAULT_TOKEN / OVAULT_CA_FILE), or through the `client.json`
that `serve` writes in its state directory (`--state-dir`, or `--sandbox DIR`
for DIR/ovault). Human output by default, `--json` for scripts, progress
bars while waiting.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from . import logs


class CliError(Exception):
    pass


# --- argument parsing ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovault", description="Backup and recovery for oVirt")
    sub = p.add_subparsers(dest="cmd", required=True)

    sv = sub.add_parser("serve", help="run the orchestrator (REST API, jobs)")
    sv.add_argument("--config", help="TOML configuration file")
    sv.add_argument("--sandbox", help="use the sandbox in DIR (reads DIR/sandbox.json)")
    sv.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8443)")
    sv.add_argument("--state-dir", help="state directory (embedded database, TLS, tokens)")
    sv.add_argument("--show-config", action="store_true", help="print the effective config and exit")

    tk = sub.add_parser("token", help="manage API tokens")
    tksub = tk.add_subparsers(dest="token_cmd", required=True)
    tc = tksub.add_parser("create", help="create a token (printed once)")
    tc.add_argument("--role", choices=("admin", "operator", "viewer"), required=True)
    tc.add_argument("--name", default="cli")
    tl = tksub.add_parser("list", help="list tokens")
    tr = tksub.add_parser("revoke", help="revoke a token")
    tr.add_argument("token_id")
    for x in (tc, tl, tr):
        x.add_argument("--config")
        x.add_argument("--sandbox")
        x.add_argument("--state-dir")
        x.add_argument("--json", action="store_true")

    def client(parser):
        parser.add_argument("--server", default=os.environ.get("OVAULT_SERVER"), help="orchestrator URL")
        parser.add_argument("--token", default=os.environ.get("OVAULT_TOKEN"), help="API token")
        parser.add_argument("--ca-file", default=os.environ.get("OVAULT_CA_FILE"))
        parser.add_argument("--state-dir", help="find the server through STATE_DIR/client.json")
        parser.add_argument("--sandbox", help="the orchestrator serving sandbox DIR")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    bk = sub.add_parser("backup", help="back up VMs (names or ids)")
    bk.add_argument("vms", nargs="+")
    bk.add_argument("--mode", choices=("auto", "full", "incremental"), default="auto")
    bk.add_argument("--wait", action="store_true", help="wait for the job, with progress")
    client(bk)
    rs = sub.add_parser("restore", help="restore a backup")
    rs.add_argument("backup")
    rs.add_argument("--name", help="name of the new VM (kind new)")
    rs.add_argument("--kind", choices=("new", "in_place", "disks"), default="new")
    rs.add_argument("--disk", action="append", dest="disk_ids", help="disk id (repeatable)")
    rs.add_argument("--cluster", dest="cluster_id")
    rs.add_argument("--storage-domain", dest="storage_domain_id")
    rs.add_argument("--target-vm", dest="target_vm_id")
    rs.add_argument("--power-on", action="store_true")
    rs.add_argument("--wait", action="store_true")
    client(rs)
    bl = sub.add_parser("backups", help="list backups")
    bl.add_argument("--vm", help="VM name or id")
    bl.add_argument("--limit", type=int, default=50)
    client(bl)
    jl = sub.add_parser("jobs", help="list jobs, or show one")
    jl.add_argument("job", nargs="?")
    jl.add_argument("--limit", type=int, default=20)
    client(jl)
    cn = sub.add_parser("cancel", help="cancel a job")
    cn.add_argument("job")
    client(cn)

    from . import store_cli
    store_cli.add_arguments(sub)

    sb = sub.add_parser("sandbox", help="a complete oVirt lab on this machine")
    sbsub = sb.add_subparsers(dest="sandbox_cmd", required=True)
    from sandbox import cli as sandbox_cli  # the CLI is the only product code that reaches it
    sandbox_cli.add_arguments(sbsub)
    demo = sub.add_parser("demo", help="bring up the sandbox and the orchestrator and show ovault working")
    # Not inside the checkout: the embedded PostgreSQL runs as `postgres`, which
    # cannot enter a checkout under a 0700 home such as Debian's /root.
    demo.add_argument("--dir", default="/var/tmp/ovault-demo",
                      help="state directory (default /var/tmp/ovault-demo)")
    demo.add_argument("--exit", action="store_true", help="stop once the report is printed")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # The demo's output is its report; its logs only speak up for problems.
    logs.configure(level="WARNING" if args.cmd == "demo" and "OVAULT_LOG_LEVEL" not in os.environ
                   else None)
    try:
        if args.cmd == "sandbox":
            from sandbox import cli as sandbox_cli
            return sandbox_cli.run(args)
        if args.cmd == "demo":
            from . import demo
            return demo.run(args)
        if args.cmd == "serve":
            return cmd_serve(args)
        if args.cmd == "token":
            return asyncio.run(cmd_token(args))
        if args.cmd in ("verify", "gc", "export", "mount", "import"):
            from . import store_cli
            return asyncio.run(store_cli.run(args))
        from . import client_cli
        return asyncio.run(client_cli.run(args))
    except CliError as e:
        print(f"ovault: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a readable message, never a traceback, for expected failures
        from .errors import OvaultError
        if isinstance(e, OvaultError):
            print(f"ovault: {e}", file=sys.stderr)
            return 1
        raise


def load_config(args):
    from .config import load
    cfg = load(getattr(args, "config", None), sandbox=getattr(args, "sandbox", None))
    if getattr(args, "state_dir", None):
        cfg.state_dir = args.state_dir
    return cfg


def cmd_serve(args) -> int:
    from .service import serve
    cfg = load_config(args)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise CliError("--listen takes HOST:PORT")
        cfg.listen.host, cfg.listen.port = host.strip("[]"), int(port)
    elif args.sandbox:
        cfg.listen.port = 0 if cfg.listen.port == 8443 else cfg.listen.port
    if args.show_config:
        print(json.dumps(cfg.masked(), indent=2))
        return 0
    if not cfg.engine.url:
        raise CliError("no engine configured: give --config FILE or --sandbox DIR")
    if not cfg.target.url:
        raise CliError("no backup target configured (target.url)")

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop=stop)
    asyncio.run(main())
    return 0


async def cmd_token(args) -> int:
    from . import catalog as cat
    from .service import state_path
    cfg = load_config(args)
    pg = None
    dsn = cfg.database.dsn
    if not dsn:
        pg = cat.EmbeddedPostgres(state_path(cfg, "pg"))
        if await pg.is_running():  # a running `serve` owns it: use it, leave it up
            dsn, pg = pg.dsn, None
        else:
            await pg.start()
            dsn = pg.dsn
    pool = await cat.connect(dsn)
    try:
        await cat.migrate(pool)
        c = cat.Catalog(pool)
        if args.token_cmd == "create":
            t, plain = await c.tokens.create(args.name, args.role)
            print(json.dumps({"id": str(t.id), "role": str(t.role), "token": plain}) if args.json
                  else f"{plain}\n(role {t.role}; shown once, store it safely)")
        elif args.token_cmd == "list":
            rows = await c.tokens.list()
            if args.json:
                print(json.dumps([{"id": str(t.id), "name": t.name, "role": str(t.role),
                                   "created_at": t.created_at.isoformat()} for t in rows]))
            else:
                for t in rows:
                    print(f"{t.id}  {t.role:<8} {t.name}")
        else:
            import uuid
            await c.tokens.revoke(uuid.UUID(args.token_id))
            print(f"revoked {args.token_id}")
    finally:
        await pool.close()
        if pg is not None:
            await pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
