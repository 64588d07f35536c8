"""Where everything lives on a backup target, and walking that tree.

::

    ovault-store.json                 store config (format, version, chunk size)
    chunks/ab/cd/<sha256 hex>         one zstd frame per chunk
    chunks/ab/cd/<sha256 hex>.<n>.bad a chunk found damaged, set aside (n = 0..9)
    vms/<vm uuid>/<backup uuid>/      one directory per backup
        <disk uuid>.fidx              fixed index of one disk
        manifest.json                 published last: the backup exists from then on

Every id is validated (`ids`) before it becomes part of a path, so nothing
outside this tree is ever named. The helpers below treat "vanished meanwhile"
(`NotFound`) as the normal outcome of running concurrently with other
writers, deletes and gc.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import NotFound
from .ids import check_uuid, is_uuid
from .target import DirEntry, Target, join

CONFIG_NAME = "ovault-store.json"
MANIFEST_NAME = "manifest.json"
INDEX_SUFFIX = ".fidx"
CHUNKS_DIR = "chunks"
VMS_DIR = "vms"
BAD_SUFFIX = ".bad"
MAX_BAD_COPIES = 10  # <digest>.0.bad .. <digest>.9.bad; the last is replaced after that


def chunk_path(digest: bytes) -> str:
    h = digest.hex()
    return f"{CHUNKS_DIR}/{h[0:2]}/{h[2:4]}/{h}"


def bad_chunk_path(digest: bytes, n: int) -> str:
    """Where the ``n``-th damaged copy of a chunk is set aside (see docs/store-format.md)."""
    return f"{chunk_path(digest)}.{n}{BAD_SUFFIX}"


def bad_chunk_name(name: str) -> tuple[str, int] | None:
    """(digest hex, n) of a ``<digest>.<n>.bad`` file name, or None."""
    parts = name.split(".")
    if len(parts) == 3 and "." + parts[2] == BAD_SUFFIX and parts[1].isdigit() and len(parts[1]) == 1:
        if len(parts[0]) == 64 and all(c in "0123456789abcdef" for c in parts[0]):
            return parts[0], int(parts[1])
    return None


def backup_dir(vm_id: str, backup_id: str) -> str:
    return f"{VMS_DIR}/{check_uuid(vm_id, 'VM')}/{check_uuid(backup_id, 'backup')}"


def manifest_path(vm_id: str, backup_id: str) -> str:
    return join(backup_dir(vm_id, backup_id), MANIFEST_NAME)


def index_path(vm_id: str, backup_id: str, disk_id: str) -> str:
    return join(backup_dir(vm_id, backup_id), f"{check_uuid(disk_id, 'disk')}{INDEX_SUFFIX}")


def index_disk_id(name: str) -> str | None:
    """The disk id of an index file name, or None if ``name`` is not one."""
    if name.endswith(INDEX_SUFFIX) and is_uuid(name[: -len(INDEX_SUFFIX)]):
        return name[: -len(INDEX_SUFFIX)]
    return None


@dataclass(frozen=True)
class BackupDir:
    vm_id: str
    backup_id: str
    published: bool  # manifest.json is present
    newest: float  # newest mtime of the directory and its files (target clock)

    @property
    def path(self) -> str:
        return f"{VMS_DIR}/{self.vm_id}/{self.backup_id}"


async def safe_scandir(target: Target, path: str) -> list[DirEntry]:
    try:
        return await target.scandir(path)
    except NotFound:
        return []


async def try_remove(target: Target, path: str) -> None:
    try:
        await target.remove(path)
    except NotFound:
        pass


async def try_rmdir(target: Target, path: str) -> None:
    try:
        await target.rmdir(path)
    except NotFound:
        pass


async def remove_dir(target: Target, path: str) -> bool:
    """Remove the files of one flat directory, then the directory; True if gone."""
    try:
        for e in await target.scandir(path):
            if not e.is_dir:
                await try_remove(target, join(path, e.name))
        return await target.rmdir(path)
    except NotFound:
        return True


async def scan_backup_dirs(target: Target, vm_id: str | None = None) -> list[BackupDir]:
    """Every backup directory (published or not), sorted by VM."""
    out: list[BackupDir] = []
    vms = [e.name for e in await safe_scandir(target, VMS_DIR) if e.is_dir and is_uuid(e.name)]
    if vm_id is not None:
        vm_id = check_uuid(vm_id, "VM")
        vms = [v for v in vms if v == vm_id]
    for vm in sorted(vms):
        for e in await safe_scandir(target, f"{VMS_DIR}/{vm}"):
            if not (e.is_dir and is_uuid(e.name)):
                continue
            try:
                files = await target.scandir(f"{VMS_DIR}/{vm}/{e.name}")
            except NotFound:
                continue
            newest = max([e.mtime] + [f.mtime for f in files])
            out.append(BackupDir(vm, e.name, any(f.name == MANIFEST_NAME for f in files), newest))
    return out


async def chunk_leaf_dirs(target: Target) -> list[str]:
    """The ``chunks/ab/cd`` directories that exist, in order."""
    out = []
    for top in sorted(await safe_scandir(target, CHUNKS_DIR), key=lambda e: e.name):
        if not (top.is_dir and len(top.name) == 2):
            continue
        for sub in sorted(await safe_scandir(target, f"{CHUNKS_DIR}/{top.name}"), key=lambda e: e.name):
            if sub.is_dir and len(sub.name) == 2:
                out.append(f"{CHUNKS_DIR}/{top.name}/{sub.name}")
    return out
