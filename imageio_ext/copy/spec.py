"""A copy command: the mover API's request body, validated (`CopySpec`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..store.ids import is_uuid
from .errors import InvalidRequest

OPS = ("backup", "restore")


@dataclass(frozen=True)
class CopySpec:
    op: str  # "backup": transfer -> store; "restore": store -> transfer
    transfer_url: str  # imageio transfer URL, https://host:54322/images/<ticket>
    store: str  # target: nfs://server/export[/dir], file:///path or a path
    vm_id: str
    backup_id: str
    disk_id: str
    size: int | None = None  # virtual disk size (backup: optional, checked against extents)
    ca_file: str | None = None  # CA of the imageio daemon's certificate (HTTPS)
    parent_backup_id: str | None = None  # backup: the previous backup of this VM
    incremental: bool = False  # backup: read only dirty extents (needs parent_backup_id)
    index_sha256: str | None = None  # restore: the index digest the catalog recorded at publication

    @classmethod
    def from_dict(cls, d: Any) -> "CopySpec":
        if not isinstance(d, dict):
            raise InvalidRequest("the body must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known - {"id"}
        if unknown:
            raise InvalidRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        for k in ("op", "transfer_url", "store", "vm_id", "backup_id", "disk_id"):
            if not isinstance(d.get(k), str) or not d[k]:
                raise InvalidRequest(f"{k} is required (a string)")
        if d["op"] not in OPS:
            raise InvalidRequest(f"op must be one of {OPS}")
        for k in ("vm_id", "backup_id", "disk_id", "parent_backup_id"):
            v = d.get(k)
            if v is not None and not (isinstance(v, str) and is_uuid(v.lower())):
                raise InvalidRequest(f"{k} must be a UUID")
        size = d.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise InvalidRequest("size must be a positive integer")
        inc = d.get("incremental", False)
        if not isinstance(inc, bool):
            raise InvalidRequest("incremental must be a boolean")
        if inc and not d.get("parent_backup_id"):
            raise InvalidRequest("incremental needs parent_backup_id")
        if d["op"] == "restore" and (inc or d.get("parent_backup_id")):
            raise InvalidRequest("a restore takes no parent_backup_id or incremental")
        idx = d.get("index_sha256")
        if idx is not None and not (isinstance(idx, str) and len(idx) == 64
                                    and all(c in "0123456789abcdef" for c in idx.lower())):
            raise InvalidRequest("index_sha256 must be 64 hex digits")
        if idx is not None and d["op"] != "restore":
            raise InvalidRequest("index_sha256 is for a restore")
        ca = d.get("ca_file")
        if ca is not None and not isinstance(ca, str):
            raise InvalidRequest("ca_file must be a string")
        return cls(
            op=d["op"], transfer_url=d["transfer_url"], store=d["store"],
            vm_id=d["vm_id"].lower(), backup_id=d["backup_id"].lower(), disk_id=d["disk_id"].lower(),
            size=size, ca_file=ca,
            parent_backup_id=d["parent_backup_id"].lower() if d.get("parent_backup_id") else None,
            incremental=inc, index_sha256=idx.lower() if idx else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)
