"""The copy engine's error family.

Every error a copy ends with on purpose is a `CopyError`. Each subclass is one
meaning with a stable ``code`` (the mover API reports it as ``error.code``),
and renders its message from a template over typed attributes, like the
store's errors. Store errors that reach a copy are wrapped (``__cause__`` is
kept) so a caller needs to know only this family.
"""

from __future__ import annotations

from ..store import errors as store_errors


class CopyError(Exception):
    """Base of every deliberate copy error."""

    code = "copy_error"
    msg = "Copy failed"

    def __str__(self) -> str:
        return self.msg.format(self=self)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


class InvalidRequest(CopyError):
    """The copy request itself is wrong (missing field, bad id, bad size)."""

    code = "invalid_request"
    msg = "Invalid copy request: {self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


class ImageioError(CopyError):
    """ovirt-imageio answered with an HTTP error."""

    code = "imageio_error"
    msg = "ovirt-imageio {self.method} {self.what} failed: HTTP {self.status} {self.reason}"

    def __init__(self, method: str, what: str, status: int, reason: str):
        self.method = method
        self.what = what  # path without the host, e.g. /images/<ticket>
        self.status = status
        self.reason = reason.strip()[:500]


class TransferNotFound(ImageioError):
    """The ticket is unknown to the daemon (finalized, expired, daemon restarted)."""

    code = "transfer_not_found"


class ImageioUnavailable(CopyError):
    """The imageio daemon cannot be reached or dropped the connection."""

    code = "imageio_unavailable"
    msg = "ovirt-imageio at {self.url} is unavailable: {self.reason}"

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason


class DirtyExtentsUnavailable(CopyError):
    """An incremental copy needs a transfer of a backup with dirty=true."""

    code = "dirty_extents_unavailable"
    msg = "The transfer does not offer dirty extents (is it a transfer of an incremental VM backup?): {self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


class BadExtents(CopyError):
    """imageio's extents do not tile the disk."""

    code = "bad_extents"
    msg = "imageio extents are not usable: {self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


class TargetUnavailable(CopyError):
    """The backup target (NFS server, mount) cannot be reached."""

    code = "target_unavailable"
    msg = "Backup target is unavailable: {self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


class CorruptedBackup(CopyError):
    """A chunk or index read back from the store failed its digest check."""

    code = "chunk_corrupted"
    msg = "Backup data is damaged: {self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


class BackupNotFound(CopyError):
    """The backup (or its parent, or the disk in it) does not exist in the store."""

    code = "backup_not_found"
    msg = "{self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


class StoreFailed(CopyError):
    """Any other store error."""

    code = "store_error"
    msg = "Store error: {self.reason}"

    def __init__(self, reason: str):
        self.reason = reason


def wrap_store_error(e: store_errors.StoreError) -> CopyError:
    """The copy error for a store error (caller raises it ``from e``)."""
    if isinstance(e, store_errors.TargetUnavailable):
        return TargetUnavailable(str(e))
    if isinstance(e, (store_errors.ChunkCorrupted, store_errors.ChunkMissing, store_errors.IndexCorrupted,
                      store_errors.ManifestCorrupted)):
        return CorruptedBackup(str(e))
    if isinstance(e, (store_errors.BackupNotFound, store_errors.DiskNotFound, store_errors.StoreNotInitialized)):
        return BackupNotFound(str(e))
    if isinstance(e, (store_errors.InvalidId, store_errors.InvalidRange)):
        return InvalidRequest(str(e))
    return StoreFailed(str(e))
