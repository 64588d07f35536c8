"""The store's error family.

Every error the store raises on purpose is a `StoreError`. Each subclass names
one meaning (not one call site) and renders its message from a template over
its typed attributes, in the style of ovirt-imageio's ``errors.py``:

    class ChunkMissing(StoreError):
        msg = "Chunk {self.digest} is missing"

The orchestrator maps these to problem+json types; the names are stable.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every deliberate store error."""

    msg = "Store error"

    def __str__(self) -> str:
        return self.msg.format(self=self)


class InvalidId(StoreError):
    """An id that would become part of a path is not a canonical UUID."""

    msg = "Invalid {self.kind} id {self.value!r}: expected a UUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'"

    def __init__(self, kind: str, value: object):
        self.kind = kind
        self.value = value


class InvalidPath(StoreError):
    """A target-relative path escapes the target or is malformed."""

    msg = "Invalid target path {self.path!r}: {self.reason}"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class TargetUnavailable(StoreError):
    """The backup target cannot be reached (NFS server down, mount failed)."""

    msg = "Backup target {self.url} is unavailable: {self.reason}"

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason


class NotFound(StoreError):
    """A file or directory the store needs does not exist on the target."""

    msg = "Not found on target: {self.path}"

    def __init__(self, path: str):
        self.path = path


class StoreNotInitialized(StoreError):
    msg = "No ovault store at {self.url} (ovault-store.json is missing); run init first"

    def __init__(self, url: str):
        self.url = url


class IncompatibleStore(StoreError):
    """ovault-store.json describes a store this code cannot or must not use."""

    msg = "Incompatible store at {self.url}: {self.reason}"

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason


class ChunkMissing(StoreError):
    """A referenced chunk is not in the store.

    ``offsets`` lists the disk offsets that referenced it, when known, so a
    writer can re-send those ranges (see `DiskWriter.commit`).
    """

    msg = "Chunk {self.digest} is missing{self._where}"

    def __init__(self, digest: str, offsets: list[int] | None = None):
        self.digest = digest
        self.offsets = list(offsets or [])

    @property
    def _where(self) -> str:
        if not self.offsets:
            return ""
        shown = ", ".join(str(o) for o in self.offsets[:5])
        more = f" and {len(self.offsets) - 5} more" if len(self.offsets) > 5 else ""
        return f" (referenced at disk offsets {shown}{more})"


class ChunkCorrupted(StoreError):
    """A chunk's content does not hash to its name, or cannot be decompressed."""

    msg = "Chunk {self.digest} is corrupted: {self.reason}"

    def __init__(self, digest: str, reason: str):
        self.digest = digest
        self.reason = reason


class IndexCorrupted(StoreError):
    """A fixed index (.fidx) is malformed or fails its checksum."""

    msg = "Index {self.path} is corrupted: {self.reason}"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class ManifestCorrupted(StoreError):
    msg = "Manifest {self.path} is corrupted: {self.reason}"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class BackupNotFound(StoreError):
    msg = "Backup {self.backup_id} of VM {self.vm_id} does not exist (no published manifest)"

    def __init__(self, vm_id: str, backup_id: str):
        self.vm_id = vm_id
        self.backup_id = backup_id


class DiskNotFound(StoreError):
    msg = "Backup {self.backup_id} has no disk {self.disk_id}"

    def __init__(self, backup_id: str, disk_id: str):
        self.backup_id = backup_id
        self.disk_id = disk_id


class BackupExists(StoreError):
    msg = "Backup {self.backup_id} of VM {self.vm_id} already exists"

    def __init__(self, vm_id: str, backup_id: str):
        self.vm_id = vm_id
        self.backup_id = backup_id


class InvalidRange(StoreError):
    """A write or read range that breaks the writer's or reader's rules."""

    msg = "Invalid range offset={self.offset} length={self.length}: {self.reason}"

    def __init__(self, offset: int, length: int, reason: str):
        self.offset = offset
        self.length = length
        self.reason = reason


class IncompleteDisk(StoreError):
    """commit() was called while some chunk slots were never written."""

    msg = "Disk {self.disk_id} is incomplete: {self.missing} chunk slots never written (first at offset {self.first_offset})"

    def __init__(self, disk_id: str, missing: int, first_offset: int):
        self.disk_id = disk_id
        self.missing = missing
        self.first_offset = first_offset


class WriterStateError(StoreError):
    """A writer method was called out of order (write after commit, ...)."""

    msg = "{self.what}"

    def __init__(self, what: str):
        self.what = what


class ExportFailed(StoreError):
    msg = "Export to {self.dest} failed: {self.reason}"

    def __init__(self, dest: str, reason: str):
        self.dest = dest
        self.reason = reason
