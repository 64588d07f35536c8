"""File-level restore's part of the OpenAPI document (api/files.py), merged
into `openapi.PATHS` and `openapi.SCHEMAS` by `extend()`."""
from __future__ import annotations

from .openapi_parts import INT, NSTR, STR, TIME, UUID, _json, nullable, obj, op, path, q, ref

GUEST_PATH = {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "^/",
              "description": "/<file system>/<path in it>: /sda1/etc/hostname, /vg0/root/var/log; "
                             "'.' and '..' components are refused, links are not followed"}


def extend(schemas: dict, paths: dict) -> None:
    schemas["FileEntry"] = obj({
        "name": STR, "path": STR,
        "type": {"type": "string", "enum": ["filesystem", "volume_group", "directory", "file", "symlink", "other"]},
        "size": nullable(INT), "mode": nullable({"type": "string", "pattern": "^[0-7]{4}$"}),
        "mtime": nullable(TIME),
        "fstype": {"type": "string", "description": "file systems only: ext4, xfs, ..."},
        "target": {"type": "string", "description": "symbolic links only: where it points (not followed)"}},
        required=["name", "path", "type", "size", "mode", "mtime"])
    schemas["FileListing"] = obj({
        "backup_id": UUID, "disk_id": STR, "path": STR, "items": {"type": "array", "items": ref("FileEntry")},
        "unmountable": {"type": "object", "additionalProperties": STR,
                        "description": "at the root: file systems found but not mounted, and why"}},
        required=["backup_id", "disk_id", "path", "items"])
    schemas["FileArchiveRequest"] = obj({
        "paths": {"type": "array", "minItems": 1, "maxItems": 100, "uniqueItems": True, "items": GUEST_PATH}},
        extra=False)
    version = obj({"backup_id": UUID, "created_at": nullable(TIME), "type": STR, "size": nullable(INT),
                   "mtime": nullable(TIME)})
    disk_ref = {"backup_id": UUID, "disk_id": STR, "disk_alias": NSTR}
    schemas["FileSearch"] = obj({
        "vm_id": STR, "name": STR, "backups_searched": INT, "truncated": {"type": "boolean"},
        "complete": {"type": "boolean", "description": "every searched backup disk had an index: "
                                                       "the answer holds every match"},
        "items": {"type": "array", "items": obj({
            "disk_id": STR, "disk_alias": NSTR, "path": STR,
            "versions": {"type": "array", "items": version,
                         "description": "one per backup holding the path, newest first"}})},
        "not_indexed": {"type": "array", "description": "backup disks not searched: no index yet", "items": obj({
            **disk_ref, "created_at": nullable(TIME),
            "state": {"type": "string", "enum": ["queued", "indexing", "failed"]},
            "error": {"type": "string", "description": "failed only: why (retried by a search 5 min later)"}},
            required=["backup_id", "disk_id", "state"])},
        "indexing": nullable(obj({
            "state": {"type": "string", "enum": ["running", "done"]}, "done": INT, "total": INT,
            "failed": INT, "url": {"type": "string", "description": "the FileIndexing resource to poll"}},
            required=["state", "done", "total", "failed", "url"]))},
        required=["vm_id", "name", "items", "backups_searched", "truncated", "complete", "not_indexed",
                  "indexing"])
    schemas["FileIndexing"] = obj({
        "vm_id": STR, "url": STR,
        "state": {"type": "string", "enum": ["idle", "running", "done"],
                  "description": "idle: no indexing of this VM since the server started"},
        "done": INT, "total": INT,
        "failed": {"type": "array", "items": obj({**disk_ref, "error": STR})},
        "pending": {"type": "array", "items": obj({
            **disk_ref, "state": {"type": "string", "enum": ["queued", "indexing"]}})},
        "started_at": nullable(TIME), "finished_at": nullable(TIME)},
        required=["vm_id", "state", "done", "total", "failed", "pending"])
    ids = [path("id"), path("disk_id")]
    binary = {"type": "string", "format": "binary"}
    tags = ["files"]
    paths["/api/v1/backups/{id}/disks/{disk_id}/files"] = {"get": op(
        "List a folder of a backup disk (the root lists its file systems)", "operator",
        {"200": _json(ref("FileListing"))}, tags=tags,
        params=ids + [q("path", GUEST_PATH, "default /")])}
    paths["/api/v1/backups/{id}/disks/{disk_id}/files/content"] = {"get": op(
        "Download one file of a backup disk (streamed)", "operator",
        {"200": {"description": "the file's bytes",
                 "content": {"application/octet-stream": {"schema": binary}}}}, tags=tags,
        params=ids + [{**q("path", GUEST_PATH), "required": True}])}
    paths["/api/v1/backups/{id}/disks/{disk_id}/files/archive"] = {"post": op(
        "Download files and folders of a backup disk as one tar.gz (streamed)", "operator",
        {"200": {"description": "a gzip'ed tar; links are stored as links",
                 "content": {"application/gzip": {"schema": binary}}}}, tags=tags,
        params=ids, body="FileArchiveRequest")}
    paths["/api/v1/vms/{id}/files"] = {"get": op(
        "Which of a VM's backups hold paths matching a name (with each version's size and mtime); answers "
        "at once from the indexes there are and indexes the other backup disks in the background", "operator",
        {"200": _json(ref("FileSearch"))}, tags=tags,
        params=[path("id"), {**q("name", {"type": "string", "minLength": 1, "maxLength": 255},
                                 "a glob (*, ?, [...]) on the name, or on the whole path when it holds a /"),
                             "required": True}])}
    paths["/api/v1/vms/{id}/files/indexing"] = {
        "get": op("The background indexing of a VM's backup disks that searches started (progress)",
                  "operator", {"200": _json(ref("FileIndexing"))}, tags=tags, params=[path("id")]),
        "delete": op("Stop the VM's indexing (its disks are not indexed again for 5 minutes)", "operator",
                     {"200": _json(ref("FileIndexing"))}, tags=tags, params=[path("id")])}
