"""The configured target's store and its key (encryption at rest).

A store is encrypted or not from its creation (`target.encrypt`, or the
``encrypt`` option of the target's catalog row). The key of an encrypted
store lives on this host only, in ``target.key_file`` (default
``<state_dir>/keys/<target name>.key``, mode 0600, directory 0700) — never
on the target, which holds only its fingerprint. Movers get it per copy
over their authenticated TLS channel (`jobs.adapters.MoverPort`). Other
targets a policy writes to (`policies.targets.TargetStores`) are opened the
same way, each with ``<state_dir>/keys/<its name>.key``.
"""
from __future__ import annotations

import re
from pathlib import Path

from imageio_ext.store import Store, StoreKey, StoreKeyInvalid, StoreKeyMissing, StoreNotInitialized
from imageio_ext.store.crypto import read_key_file, write_key_file

from .config import Config

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")  # the API's target names: safe as a file name


def key_path(cfg: Config, name: str | None = None) -> Path:
    """Where the key of target ``name`` (default: the configured one) lives on this host."""
    name = cfg.target.name if name is None else name
    if name == cfg.target.name and cfg.target.key_file:
        return Path(cfg.target.key_file)
    if not _NAME.match(name):
        raise StoreKeyInvalid(f"target name {name!r} cannot name a key file")
    return Path(cfg.state_dir) / "keys" / f"{name}.key"


def load_key(cfg: Config, name: str | None = None) -> StoreKey | None:
    """The key in the key file, or None when there is no key file."""
    p = key_path(cfg, name)
    if not p.exists():
        return None
    return read_key_file(p)


async def open_store(cfg: Config, *, encrypt: bool | None = None) -> Store:
    """The configured target's store with its key (`open_target`)."""
    return await open_target(cfg, cfg.target.name, cfg.target.url,
                             encrypt=cfg.target.encrypt if encrypt is None else encrypt)


async def open_target(cfg: Config, name: str, url: str, *, encrypt: bool = False) -> Store:
    """The store of target ``name`` at ``url`` with its key.

    A new target is initialised with the configured chunk size, encrypted
    when ``encrypt`` — a key file that already exists (imported beforehand)
    is used, otherwise a new key is written. An existing store keeps its own
    chunk size, version and encryption; an encrypted one needs its key file
    (`StoreKeyMissing` names the path).
    """
    try:
        store = await Store.open(url)
    except StoreNotInitialized:
        key = None
        if encrypt:
            key = load_key(cfg, name)
            if key is None:
                key = StoreKey.generate()
                write_key_file(key_path(cfg, name), key)
        return await Store.open(url, create=True, chunk_size=cfg.target.chunk_size_kib * 1024,
                                key=key, encrypt=encrypt)
    return await attach_key(store, cfg, name)


async def open_existing(cfg: Config) -> Store:
    """The configured target's existing store, with its key when encrypted."""
    return await attach_key(await Store.open(cfg.target.url), cfg)


async def attach_key(store: Store, cfg: Config, name: str | None = None) -> Store:
    """Give an encrypted store the key from its key file (closing it on failure)."""
    if store.encrypted:
        try:
            key = load_key(cfg, name)
            if key is None:
                raise StoreKeyMissing(store.target.url, store.config.key_fingerprint,
                                      "backing up, restoring and verifying",
                                      f"no key file {key_path(cfg, name)}; import it with `ovault key import`")
            store.set_key(key)
        except BaseException:
            await store.close()
            raise
    return store
