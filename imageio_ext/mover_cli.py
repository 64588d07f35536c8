"""The `ovault-mover` command line.

    ovault-mover [serve] [--config FILE] [--host H] [--port P] [--imageio-socket S]
                         [--token-file F] [--tls-cert C --tls-key K] [--show-config]
    ovault-mover copy SPEC.json|- [--key-file F]   one copy in this process (direct mode), JSON result
    ovault-mover nbd --store URL --vm ID --backup ID --disk ID (--socket PATH | --port N) [--key-file F]

``--key-file``: the store key of an encrypted store (a 0600 file holding it in hex,
as `ovault key export` prints it); never on the command line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys


def _logging(fmt: str = "console") -> None:
    import structlog

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                                    renderer])


def _serve(args) -> int:
    from aiohttp import web

    from .mover import ConfigError, MoverConfig, create_app
    from .version import version

    overrides = {"host": args.host, "port": args.port, "imageio_socket": args.imageio_socket,
                 "imageio_control_socket": args.imageio_control_socket,
                 "token_file": args.token_file, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
                 "max_copies": args.max_copies, "requests_per_copy": args.requests,
                 "client_ca": args.client_ca, "imageio_url": args.imageio_url, "imageio_ca": args.imageio_ca,
                 "allowed_stores": args.allowed_stores}
    try:
        cfg = MoverConfig.load(args.config, overrides=overrides)
    except ConfigError as e:
        print(f"ovault-mover: {e}", file=sys.stderr)
        return 2
    if args.show_config:
        print(json.dumps(cfg.masked(), indent=2))
        return 0
    _logging(cfg.log_format)
    import structlog

    structlog.get_logger("ovault.mover").info("mover.start", version=version(), pid=os.getpid(),
                                              hostname=socket.gethostname(), host=cfg.host, port=cfg.port,
                                              tls=bool(cfg.tls_cert), mutual_tls=bool(cfg.client_ca),
                                              imageio_socket=cfg.imageio_socket, imageio_url=cfg.imageio_url,
                                              allowed_stores=cfg.allowed_stores)
    sslctx = cfg.ssl_context()  # mutual TLS with client_ca
    web.run_app(create_app(cfg), host=cfg.host, port=cfg.port, ssl_context=sslctx, print=None,
                access_log=None, shutdown_timeout=10)
    return 0


def _copy(args) -> int:
    from .copy import run_copy
    from .errors import OvaultError

    _logging()
    raw = sys.stdin.read() if args.spec == "-" else open(args.spec).read()

    def progress(p):
        if args.progress:
            print(f"\r{p.bytes_done / max(1, p.bytes_total):6.1%} {p.rate / 2**20:8.1f} MiB/s", end="",
                  file=sys.stderr, flush=True)

    async def copy():
        spec = json.loads(raw)
        store = await _open_store(spec.get("store"), args.key_file) if args.key_file else None
        try:
            return await run_copy(spec, store=store, local_socket=args.imageio_socket,
                                  control_socket=args.imageio_control_socket,
                                  requests=args.requests, progress=progress)
        finally:
            if store is not None:
                await store.close()

    try:
        res = asyncio.run(copy())
    except OvaultError as e:
        print(json.dumps({"error": e.to_dict()}))
        return 1
    if args.progress:
        print(file=sys.stderr)
    print(json.dumps(res.to_dict()))
    return 0


async def _open_store(url, key_file):
    """The store at ``url``, given the key in ``key_file`` (an encrypted store)."""
    from .store import Store, StoreKeyInvalid
    from .store.crypto import read_key_file

    try:
        key = read_key_file(key_file) if key_file else None
    except OSError as e:
        raise StoreKeyInvalid(str(e)) from None
    return await Store.open(url, key=key)


def _nbd(args) -> int:
    from .nbd import serve_disk

    _logging()

    async def main():
        store = await _open_store(args.store, args.key_file)
        try:
            reader = await store.open_disk(args.vm, args.backup, args.disk)
            export = await serve_disk(reader, unix_path=args.socket, host=args.host, port=args.port or 0)
            print(json.dumps({"url": export.url, "size": reader.size}), flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await export.close()
        finally:
            await store.close()

    asyncio.run(main())
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv.insert(0, "serve")
    p = argparse.ArgumentParser(prog="ovault-mover", description="ovault data mover")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the mover API")
    s.add_argument("--config", help="TOML file ([mover] table or top-level keys)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--imageio-socket")
    s.add_argument("--imageio-control-socket", help="imageio's control socket: read/write local NBD exports directly")
    s.add_argument("--token-file")
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument("--client-ca", help="CA of the orchestrator's client certificates (mutual TLS)")
    s.add_argument("--imageio-url", help="this host's imageio daemon, e.g. https://host:54322")
    s.add_argument("--imageio-ca", help="CA of this host's imageio certificate")
    s.add_argument("--allowed-stores", help="comma-separated backup targets this mover may use")
    s.add_argument("--max-copies", type=int)
    s.add_argument("--requests", type=int)
    s.add_argument("--show-config", action="store_true")
    c = sub.add_parser("copy", help="run one copy here (direct mode)")
    c.add_argument("spec", help="JSON copy request (as POST /v1/copies), a file or - for stdin")
    c.add_argument("--imageio-socket")
    c.add_argument("--imageio-control-socket")
    c.add_argument("--requests", type=int, default=4)
    c.add_argument("--progress", action="store_true")
    c.add_argument("--key-file", help="the store key of an encrypted store (0600 file, hex)")
    n = sub.add_parser("nbd", help="export a backup disk read-only over NBD")
    n.add_argument("--store", required=True)
    n.add_argument("--vm", required=True)
    n.add_argument("--backup", required=True)
    n.add_argument("--disk", required=True)
    g = n.add_mutually_exclusive_group(required=True)
    g.add_argument("--socket", help="unix socket path")
    g.add_argument("--port", type=int, help="TCP port (0: any)")
    n.add_argument("--host", default="127.0.0.1")
    n.add_argument("--key-file", help="the store key of an encrypted store (0600 file, hex)")
    args = p.parse_args(argv)
    return {"serve": _serve, "copy": _copy, "nbd": _nbd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
