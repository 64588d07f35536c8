"""Store creation and store keys: `init`, `key show|export|import`.

They work on the configured target and this host's key file (configuration
as for `serve`): ``ovault init --encrypt`` creates an encrypted store (format
version 2) with a new key; ``ovault key export --paper`` prints the key in a
form to keep on paper, ``ovault key import`` puts it back on a new appliance,
checked against the fingerprint in the store's ``ovault-store.json``. The key
is printed only by ``export``, and read from a file or standard input, never
from the command line.
"""
from __future__ import annotations

import asyncio
import json
import sys

from imageio_ext.store import Store, StoreError, StoreKey, StoreKeyInvalid
from imageio_ext.store.crypto import paper_export, paper_import, write_key_file

from .common import CliError, add_config_options, load_config


def register(sub) -> None:
    i = sub.add_parser("init", help="create the store on the configured target (format 2)")
    i.add_argument("--encrypt", action="store_true",
                   help="encrypt at rest (AES-256-GCM); a new key is written to the key file "
                        "(or an imported one there is used)")
    add_config_options(i)
    i.set_defaults(func=lambda args: asyncio.run(init(args)))
    k = sub.add_parser("key", help="the store key of an encrypted target: show, export, import")
    ks = k.add_subparsers(dest="key_cmd", required=True, metavar="ACTION")
    show = ks.add_parser("show", help="the store's encryption, key fingerprint and key file")
    exp = ks.add_parser("export", help="print the key (hex, or --paper for a printable form)")
    exp.add_argument("--paper", action="store_true",
                     help="base32 in numbered lines, each with a checksum, and the fingerprint")
    imp = ks.add_parser("import", help="install a key (paper form or hex) after checking its fingerprint")
    imp.add_argument("file", nargs="?", default="-", help="file holding the key (default: standard input)")
    imp.add_argument("--force", action="store_true", help="replace an existing key file")
    for p, fn in ((show, show_key), (exp, export_key), (imp, import_key)):
        p.add_argument("--target", metavar="NAME",
                       help="another target of the catalog (a policy's), by name (default: the configured one)")
        add_config_options(p)
        p.set_defaults(func=lambda args, fn=fn: asyncio.run(_with_store(args, fn)))


async def init(args) -> int:
    from ..store_keys import key_path, open_store
    cfg = load_config(args)
    if not cfg.target.url:
        raise CliError("no backup target configured (target.url)")
    try:
        store = await open_store(cfg, encrypt=args.encrypt)
    except (StoreError, ValueError) as e:
        raise CliError(str(e)) from None
    try:
        if args.encrypt and not store.encrypted:
            raise CliError(f"the store at {cfg.target.url} exists and is not encrypted; encryption is chosen "
                           "when a store is created (back up to a new target to encrypt)")
        c = store.config
        doc = {"url": cfg.target.url, "version": c.version, "chunk_size": c.chunk_size,
               "encryption": c.encryption, "key_fingerprint": c.key_fingerprint,
               "key_file": str(key_path(cfg)) if store.encrypted else None}
    finally:
        await store.close()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"store at {doc['url']}: version {doc['version']}, chunk size {doc['chunk_size']}, "
              f"encryption {doc['encryption']}"
              + (f", key fingerprint {doc['key_fingerprint']} (key in {doc['key_file']}; "
                 "keep a copy: `ovault key export --paper`)" if store.encrypted else ""))
    return 0


async def _with_store(args, fn) -> int:
    cfg = load_config(args)
    name, url = cfg.target.name, cfg.target.url
    if args.target and args.target != cfg.target.name:
        from .. import catalog as cat
        from .local_catalog import open_catalog
        async with open_catalog(cfg) as c:
            try:
                t = await c.targets.get_by_name(args.target)
            except cat.NotFound:
                raise CliError(f"no target named {args.target!r} in the catalog") from None
        name, url = t.name, t.url
    if not url:
        raise CliError("no backup target configured (target.url)")
    try:
        store = await Store.open(url)  # no key: the key is what these commands handle
    except StoreError as e:
        raise CliError(str(e)) from None
    args.target_name = name
    try:
        return await fn(args, store, cfg)
    finally:
        await store.close()


def _require_encrypted(store: Store) -> str:
    if not store.encrypted:
        raise CliError(f"the store at {store.target.url} is not encrypted: it has no key")
    return store.config.key_fingerprint


async def show_key(args, store, cfg) -> int:
    from ..store_keys import key_path, load_key
    c = store.config
    doc = {"url": store.target.url, "version": c.version, "encryption": c.encryption,
           "key_fingerprint": c.key_fingerprint, "key_file": None, "key_file_matches": None}
    if store.encrypted:
        doc["key_file"] = str(key_path(cfg, args.target_name))
        try:
            key = load_key(cfg, args.target_name)
        except StoreKeyInvalid as e:
            raise CliError(str(e)) from None
        doc["key_file_matches"] = None if key is None else key.fingerprint == c.key_fingerprint
    if args.json:
        print(json.dumps(doc, indent=2))
    elif not store.encrypted:
        print(f"store at {doc['url']} (version {c.version}) is not encrypted")
    else:
        state = {None: "MISSING", True: "present, matches", False: "present, DOES NOT MATCH"}[doc["key_file_matches"]]
        print(f"store at {doc['url']} (version {c.version}): {c.encryption}, key fingerprint {c.key_fingerprint}\n"
              f"key file {doc['key_file']}: {state}")
    return 1 if store.encrypted and doc["key_file_matches"] is not True else 0


async def export_key(args, store, cfg) -> int:
    from ..store_keys import key_path, load_key
    fp = _require_encrypted(store)
    path = key_path(cfg, args.target_name)
    try:
        key = load_key(cfg, args.target_name)
    except StoreKeyInvalid as e:
        raise CliError(str(e)) from None
    if key is None:
        raise CliError(f"no key file {path} on this host")
    if key.fingerprint != fp:
        raise CliError(f"the key file {path} holds key {key.fingerprint}, not the store's {fp}")
    print(paper_export(key) if args.paper else key.hex(), end="" if args.paper else "\n")
    return 0


async def import_key(args, store, cfg) -> int:
    from ..store_keys import key_path
    fp = _require_encrypted(store)
    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="ascii", errors="replace") as f:
                text = f.read(64 * 1024)
        except OSError as e:
            raise CliError(f"cannot read {args.file}: {e.strerror}") from None
    try:
        key: StoreKey = paper_import(text, expect_fingerprint=fp)
        path = key_path(cfg, args.target_name)
        write_key_file(path, key, overwrite=args.force)
    except StoreKeyInvalid as e:
        raise CliError(str(e)) from None
    print(f"key {key.fingerprint} installed in {path} (mode 0600)")
    return 0
