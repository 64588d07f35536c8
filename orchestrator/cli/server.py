"""Server-side commands: `serve` (the orchestrator), `token` (API tokens) and
`mover-cert` (a host's mover credentials)."""
from __future__ import annotations

import asyncio
import json
import signal

from .common import CliError, add_config_options, load_config


def register(sub) -> None:
    sv = sub.add_parser("serve", help="run the orchestrator (REST API, jobs)")
    sv.add_argument("--config", help="TOML configuration file")
    sv.add_argument("--sandbox", help="use the sandbox in DIR (reads DIR/sandbox.json)")
    sv.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8443)")
    sv.add_argument("--state-dir", help="state directory (embedded database, TLS, tokens)")
    sv.add_argument("--show-config", action="store_true", help="print the effective config and exit")
    sv.set_defaults(func=cmd_serve)

    tk = sub.add_parser("token", help="manage API tokens")
    tksub = tk.add_subparsers(dest="token_cmd", required=True)
    tc = tksub.add_parser("create", help="create a token (printed once)")
    tc.add_argument("--role", choices=("admin", "operator", "viewer"), required=True)
    tc.add_argument("--name", default="cli")
    tc.add_argument("--expires-days", type=float, default=None,
                    help="days until the token expires (0: never; admin tokens default to api.admin_token_days)")
    tl = tksub.add_parser("list", help="list tokens")
    tr = tksub.add_parser("revoke", help="revoke a token")
    tr.add_argument("token_id")
    for x in (tc, tl, tr):
        add_config_options(x)
    tk.set_defaults(func=lambda args: asyncio.run(cmd_token(args)))

    mc = sub.add_parser("mover-cert", help="issue a host's mover credentials (TLS certificate, own token)")
    mc.add_argument("host", help="the host's name (a directory under <state_dir>/movers)")
    mc.add_argument("--name", action="append", default=[],
                    help="DNS name or IP the orchestrator reaches the mover by (repeatable; default HOST)")
    mc.add_argument("--dir", help="the mover CA's directory (default <state_dir>/movers)")
    add_config_options(mc, json_output=False)
    mc.set_defaults(func=cmd_mover_cert)


def cmd_serve(args) -> int:
    from ..service import serve
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
    from .local_catalog import open_catalog
    cfg = load_config(args)
    async with open_catalog(cfg) as c:
        if args.token_cmd == "create":
            import datetime as dt
            days = args.expires_days
            if days is None:
                days = cfg.api.admin_token_days if args.role == "admin" else 0
            expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days) if days > 0 else None
            t, plain = await c.tokens.create(args.name, args.role, expires_at=expires)
            until = f"expires {expires:%Y-%m-%d %H:%M} UTC" if expires else "never expires"
            print(json.dumps({"id": str(t.id), "role": str(t.role), "token": plain,
                              "expires_at": expires.isoformat() if expires else None}) if args.json
                  else f"{plain}\n(role {t.role}; {until}; shown once, store it safely)")
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
    return 0


def cmd_mover_cert(args) -> int:
    """Issue (or re-issue) one host's mover certificate and token; print the files."""
    from pathlib import Path

    from ..tls import mover_credentials
    d = args.dir or str(Path(load_config(args).state_dir) / "movers")
    try:
        paths = mover_credentials(d, args.host, args.name)
    except ValueError as e:
        raise CliError(str(e)) from None
    print(json.dumps(paths, indent=2))
    print(f"install on {args.host}: tls_cert={paths['cert']} tls_key={paths['key']} "
          f"token_file={paths['token_file']} client_ca={paths['ca']}; orchestrator: movers.ca_file, "
          "movers.client_cert/client_key as above and movers.tokens[<host id>] = the token file's content",
          file=__import__("sys").stderr)
    return 0
