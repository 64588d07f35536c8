"""The store config (ovault-store.json) and backup manifest (manifest.json).

Both are small JSON documents, written atomically. The manifest is the
commit record of a backup: it is published last, and a backup exists only
once it does. Everything a reader needs to restore a disk is in the manifest
and the indexes; the caller's own data (VM configuration, OVF, consistency,
job ids) rides along untouched under ``"meta"``.
"""

from __future__ import annotations

import json
import uuid as _uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import IncompatibleStore, InvalidId, ManifestCorrupted
from .ids import check_uuid

STORE_FORMAT = "ovault-store"
STORE_VERSION = 2  # what new stores get
STORE_VERSIONS = (1, 2)  # what this code reads and writes
MANIFEST_FORMAT = "ovault-manifest"
MANIFEST_VERSION = 1  # of a version-1 store; a version-2 store's manifests are version 2
ENCRYPTIONS = ("none", "aes-256-gcm")
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
# The largest store config or manifest read from a target (a manifest of a VM
# with hundreds of disks and its OVF is well below): a larger one is corrupt.
MAX_DOCUMENT = 1024 * 1024


def parse_json(data: bytes):
    """JSON from a target: any failure, including a document nested deeper than
    the parser's recursion limit, is a ValueError (the caller's "corrupt")."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StoreConfig:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    digest: str = "blake3"
    compression: str = "zstd"
    created: str = field(default_factory=utc_now_iso)
    version: int = STORE_VERSION
    # Version 2 only:
    store_id: _uuid.UUID | None = None  # bound into every encrypted object's associated data
    encryption: str = "none"
    key_fingerprint: str | None = None  # of the store key (crypto.StoreKey.fingerprint)

    @classmethod
    def new(cls, chunk_size: int = DEFAULT_CHUNK_SIZE, *, version: int = STORE_VERSION,
            fingerprint: str | None = None) -> "StoreConfig":
        """The config of a store about to be created (encrypted when ``fingerprint`` is given)."""
        if version == 1:
            if fingerprint is not None:
                raise ValueError("version-1 stores cannot be encrypted")
            return cls(chunk_size=chunk_size, digest="sha256", version=1)
        return cls(chunk_size=chunk_size, version=version, store_id=_uuid.uuid4(),
                   digest="blake3-keyed" if fingerprint else "blake3",
                   encryption="aes-256-gcm" if fingerprint else "none", key_fingerprint=fingerprint)

    def to_json(self) -> bytes:
        doc = {"format": STORE_FORMAT, "version": self.version}
        if self.version >= 2:
            doc["store_id"] = str(self.store_id)
        doc.update({"chunk_size": self.chunk_size, "digest": self.digest, "compression": self.compression})
        if self.version >= 2:
            doc["encryption"] = self.encryption
            doc["key_fingerprint"] = self.key_fingerprint
        doc["created"] = self.created
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, url: str) -> "StoreConfig":
        try:
            doc = parse_json(data)
        except ValueError as e:
            raise IncompatibleStore(url, f"ovault-store.json is not JSON ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            raise IncompatibleStore(url, f"format is {doc.get('format') if isinstance(doc, dict) else doc!r}, expected {STORE_FORMAT!r}")
        version = doc.get("version")
        if version not in STORE_VERSIONS or isinstance(version, bool):
            raise IncompatibleStore(url, f"store version {version!r}; this ovault reads versions 1 and 2")
        digests = ("sha256",) if version == 1 else ("blake3", "blake3-keyed")
        if doc.get("digest") not in digests:
            raise IncompatibleStore(url, f"digest {doc.get('digest')!r} is not supported in version {version} "
                                    f"(only {' or '.join(digests)})")
        if doc.get("compression") != "zstd":
            raise IncompatibleStore(url, f"compression {doc.get('compression')!r} is not supported (only zstd)")
        cs = doc.get("chunk_size")
        if not isinstance(cs, int) or cs < 4096 or cs > 64 * 1024 * 1024 or cs % 4096:
            raise IncompatibleStore(url, f"chunk_size {cs!r} must be a multiple of 4096 in 4 KiB..64 MiB")
        if version == 1:
            return cls(chunk_size=cs, digest="sha256", created=str(doc.get("created", "")), version=1)
        try:
            store_id = _uuid.UUID(str(doc.get("store_id")))
        except ValueError:
            raise IncompatibleStore(url, f"store_id {doc.get('store_id')!r} is not a UUID") from None
        enc, fp = doc.get("encryption"), doc.get("key_fingerprint")
        if enc not in ENCRYPTIONS:
            raise IncompatibleStore(url, f"encryption {enc!r} is not supported (only {', '.join(ENCRYPTIONS)})")
        encrypted = enc != "none"
        if encrypted != (doc["digest"] == "blake3-keyed"):
            raise IncompatibleStore(url, "an encrypted store has keyed digests (blake3-keyed), a plain one blake3")
        if encrypted and not (isinstance(fp, str) and len(fp) == 32 and all(c in "0123456789abcdef" for c in fp)):
            raise IncompatibleStore(url, f"key_fingerprint {fp!r} is not 32 hex digits")
        if not encrypted and fp is not None:
            raise IncompatibleStore(url, "a plain store has no key_fingerprint")
        return cls(chunk_size=cs, digest=doc["digest"], created=str(doc.get("created", "")), version=2,
                   store_id=store_id, encryption=enc, key_fingerprint=fp)


@dataclass(frozen=True)
class DiskInfo:
    disk_id: str
    size: int
    chunk_size: int
    index_sha256: str  # hex SHA-256 of the whole .fidx file
    chunks: int  # slots in the index
    zero_chunks: int  # slots holding the zero digest
    new_chunks: int = 0  # chunks this backup wrote (not found in the store)
    new_bytes: int = 0  # compressed bytes this backup wrote

    @property
    def index_name(self) -> str:
        return f"{self.disk_id}.fidx"

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk_id": self.disk_id,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "index": self.index_name,
            "index_sha256": self.index_sha256,
            "chunks": self.chunks,
            "zero_chunks": self.zero_chunks,
            "new_chunks": self.new_chunks,
            "new_bytes": self.new_bytes,
        }

    @classmethod
    def from_dict(cls, d: dict, path: str) -> "DiskInfo":
        try:
            disk_id = check_uuid(d["disk_id"], "disk")
            info = cls(
                disk_id=disk_id,
                size=int(d["size"]),
                chunk_size=int(d["chunk_size"]),
                index_sha256=str(d["index_sha256"]),
                chunks=int(d["chunks"]),
                zero_chunks=int(d["zero_chunks"]),
                new_chunks=int(d.get("new_chunks", 0)),
                new_bytes=int(d.get("new_bytes", 0)),
            )
        except (KeyError, TypeError, ValueError, InvalidId) as e:
            raise ManifestCorrupted(path, f"bad disk entry {d!r}: {e}") from e
        if d.get("index") != info.index_name:
            raise ManifestCorrupted(path, f"disk {disk_id}: index must be {info.index_name!r}")
        return info


@dataclass(frozen=True)
class BackupInfo:
    vm_id: str
    backup_id: str
    created: str
    parent_id: str | None
    disks: tuple[DiskInfo, ...]
    meta: dict[str, Any]

    def disk(self, disk_id: str) -> DiskInfo | None:
        for d in self.disks:
            if d.disk_id == disk_id:
                return d
        return None

    @property
    def consistency(self) -> str:
        """``meta["consistency"]``: "filesystem" (the engine froze the guest for
        the point in time) or "crash"; a manifest without it (written before it
        was recorded) or with an unknown value is "crash"."""
        c = self.meta.get("consistency")
        return c if c in ("filesystem", "crash") else "crash"

    def to_json(self, version: int = MANIFEST_VERSION) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "vm_id": self.vm_id,
            "backup_id": self.backup_id,
            "parent_id": self.parent_id,
            "created": self.created,
            "disks": [d.to_dict() for d in self.disks],
            "meta": self.meta,
        }
        return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, path: str, *, vm_id: str, backup_id: str,
                  version: int = MANIFEST_VERSION) -> "BackupInfo":
        try:
            doc = parse_json(data)
        except ValueError as e:
            raise ManifestCorrupted(path, f"not JSON ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ManifestCorrupted(path, f"format is not {MANIFEST_FORMAT!r}")
        if doc.get("version") != version:
            raise ManifestCorrupted(path, f"manifest version {doc.get('version')!r} in a version-{version} store")
        # The directory names are authoritative; a manifest copied to the
        # wrong place must not pretend to be another backup.
        if doc.get("vm_id") != vm_id or doc.get("backup_id") != backup_id:
            raise ManifestCorrupted(path, "vm_id/backup_id do not match the directory it is in")
        parent = doc.get("parent_id")
        if parent is not None:
            try:
                parent = check_uuid(parent, "parent backup")
            except InvalidId as e:
                raise ManifestCorrupted(path, str(e)) from e
        disks = doc.get("disks")
        if not isinstance(disks, list):
            raise ManifestCorrupted(path, "disks is not a list")
        meta = doc.get("meta", {})
        if not isinstance(meta, dict):
            raise ManifestCorrupted(path, "meta is not an object")
        return cls(
            vm_id=vm_id,
            backup_id=backup_id,
            created=str(doc.get("created", "")),
            parent_id=parent,
            disks=tuple(DiskInfo.from_dict(d, path) for d in disks),
            meta=meta,
        )
