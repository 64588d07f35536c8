"""The store's error family.

Every error the store raises on purpose is a `StoreError`. Each subclass names
one meaning (not one call site) and renders its message from a template over
its typed attributes, in the style of ovirt-imageio's ``errors.py``:

    class ChunkMissing(StoreError):
        msg = "Chunk {self.digest} is missing"

They belong to ovault's one error family (`imageio_ext.errors`): each class
has a stable ``code`` and, where it has one, the shared meaning as its first
base (`BackupNotFound` is a `NotFound`, `InvalidId` an `Invalid`, ...), so
the API's problem middleware maps them by class and the mover reports them by
code. Damage to stored data is a `Damaged`.
"""

from __future__ import annotations

from .. import errors
from ..errors import OvaultError


class StoreError(OvaultError):
    """Base of every deliberate store error."""

    msg = "Store error"
    code, title = "store_error", "Store error"


class InvalidId(errors.Invalid, StoreError):
    """An id that would become part of a path is not a canonical UUID."""

    msg = "Invalid {self.kind} id {self.value!r}: expected a UUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'"
    code = "invalid_id"

    def __init__(self, kind: str, value: object):
        self.kind = kind
        self.value = value


class InvalidPath(StoreError):
    """A target-relative path escapes the target or is malformed."""

    msg = "Invalid target path {self.path!r}: {self.reason}"
    code = "invalid_path"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class TargetUnavailable(errors.TargetUnavailable, StoreError):
    """The backup target cannot be reached (NFS server down, mount failed)."""


class MissingOnTarget(StoreError):
    """A file or directory the store needs does not exist on the target.

    Internal to the store (it catches it to decide what to do); what a caller
    looked up and did not find is a `BackupNotFound` or `DiskNotFound`."""

    msg = "Not found on target: {self.path}"
    code = "missing_on_target"

    def __init__(self, path: str):
        self.path = path


NotFound = MissingOnTarget  # the name the target backends use


class StoreNotInitialized(StoreError):
    msg = "No ovault store at {self.url} (ovault-store.json is missing); run init first"
    code = "store_not_initialized"

    def __init__(self, url: str):
        self.url = url


class IncompatibleStore(StoreError):
    """ovault-store.json describes a store this code cannot or must not use."""

    msg = "Incompatible store at {self.url}: {self.reason}"
    code = "incompatible_store"

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason


class Damaged(StoreError):
    """Stored backup data is missing or does not check out."""

    msg = "Backup data is damaged: {self.reason}"
    code, title = "backup_damaged", "Backup data damaged"


class ChunkMissing(Damaged):
    """A referenced chunk is not in the store.

    ``offsets`` lists the disk offsets that referenced it, when known, so a
    writer can re-send those ranges (see `DiskWriter.commit`).
    """

    msg = "Chunk {self.digest} is missing{self._where}"
    code = "chunk_missing"

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


class ChunkCorrupted(Damaged):
    """A chunk's content does not hash to its name, or cannot be decompressed."""

    msg = "Chunk {self.digest} is corrupted: {self.reason}"
    code = "chunk_corrupted"

    def __init__(self, digest: str, reason: str):
        self.digest = digest
        self.reason = reason


class IndexCorrupted(Damaged):
    """A fixed index (.fidx) is malformed or fails its checksum."""

    msg = "Index {self.path} is corrupted: {self.reason}"
    code = "index_corrupted"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class ManifestCorrupted(Damaged):
    msg = "Manifest {self.path} is corrupted: {self.reason}"
    code = "manifest_corrupted"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class BackupNotFound(errors.NotFound, StoreError):
    msg = "Backup {self.backup_id} of VM {self.vm_id} does not exist (no published manifest)"
    code = "backup_not_found"

    def __init__(self, vm_id: str, backup_id: str):
        self.vm_id = vm_id
        self.backup_id = backup_id


class DiskNotFound(errors.NotFound, StoreError):
    msg = "Backup {self.backup_id} has no disk {self.disk_id}"
    code = "disk_not_found"

    def __init__(self, backup_id: str, disk_id: str):
        self.backup_id = backup_id
        self.disk_id = disk_id


class BackupExists(errors.Conflict, StoreError):
    msg = "Backup {self.backup_id} of VM {self.vm_id} already exists"
    code = "backup_exists"

    def __init__(self, vm_id: str, backup_id: str):
        self.vm_id = vm_id
        self.backup_id = backup_id


class InvalidRange(errors.Invalid, StoreError):
    """A write or read range that breaks the writer's or reader's rules."""

    msg = "Invalid range offset={self.offset} length={self.length}: {self.reason}"
    code = "invalid_range"

    def __init__(self, offset: int, length: int, reason: str):
        self.offset = offset
        self.length = length
        self.reason = reason


class IncompleteDisk(StoreError):
    """commit() was called while some chunk slots were never written."""

    msg = "Disk {self.disk_id} is incomplete: {self.missing} chunk slots never written (first at offset {self.first_offset})"
    code = "incomplete_disk"

    def __init__(self, disk_id: str, missing: int, first_offset: int):
        self.disk_id = disk_id
        self.missing = missing
        self.first_offset = first_offset


class WriterStateError(StoreError):
    """A writer method was called out of order (write after commit, ...)."""

    msg = "{self.what}"
    code = "writer_state"

    def __init__(self, what: str):
        self.what = what


class ExportFailed(StoreError):
    msg = "Export to {self.dest} failed: {self.reason}"
    code = "export_failed"

    def __init__(self, dest: str, reason: str):
        self.dest = dest
        self.reason = reason


class UnsafeTargetEntry(Damaged):
    """A path on the target is a symbolic link (or another non-regular entry)
    where the store expects a plain file or directory: refused, never followed."""

    msg = "Refused target path {self.path!r}: {self.reason}"
    code = "unsafe_target_entry"

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason


class FileTooLarge(Damaged):
    """A target file is larger than the store allows for its kind; nothing of
    it was read."""

    msg = "Target file {self.path!r} is {self.size} bytes, more than the {self.limit} allowed"
    code = "target_file_too_large"

    def __init__(self, path: str, size: int, limit: int):
        self.path = path
        self.size = size
        self.limit = limit
        self.reason = f"{size} bytes, more than the {limit} allowed"


class StoreKeyInvalid(errors.Invalid, StoreError):
    """Key material that cannot be a store key (malformed, mistyped, unsafe file)."""

    msg = "Invalid store key: {self.reason}"
    code = "store_key_invalid"

    def __init__(self, reason: str):
        self.reason = reason


class StoreKeyMissing(StoreError):
    """The store is encrypted and no key was given to this process."""

    msg = ("Store at {self.url} is encrypted (key fingerprint {self.fingerprint}) and no key is "
           "available{self._where}: {self.what} needs it")
    code, title = "store_key_missing", "Store key missing"

    def __init__(self, url: str, fingerprint: str, what: str = "this operation", where: str = ""):
        self.url = url
        self.fingerprint = fingerprint
        self.what = what
        self.where = where

    @property
    def _where(self) -> str:
        return f" ({self.where})" if self.where else ""


class StoreKeyWrong(StoreError):
    """A key was given but it is not the store's key."""

    msg = ("Wrong key for the store at {self.url}: the key's fingerprint is {self.given}, "
           "the store's is {self.expected}")
    code, title = "store_key_wrong", "Wrong store key"

    def __init__(self, url: str, given: str, expected: str):
        self.url = url
        self.given = given
        self.expected = expected
