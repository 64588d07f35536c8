"""The copy engine's errors.

They belong to ovault's one error family (`imageio_ext.errors`): each class
is one meaning with a stable ``code`` (the mover API reports it as
``error.code``) and renders its message from a template over typed
attributes. Store errors reach a copy's caller as they are (they are of the
same family, with their own codes); the names below that stand for them are
kept for callers that import them from here.
"""

from __future__ import annotations

from ..errors import Invalid, OvaultError, Unavailable
from ..store.errors import BackupNotFound, Damaged, StoreError, TargetUnavailable

__all__ = [
    "CopyError", "InvalidRequest", "ImageioError", "TransferNotFound", "ImageioUnavailable",
    "DirtyExtentsUnavailable", "BadExtents", "TargetUnavailable", "CorruptedBackup",
    "BackupNotFound", "StoreFailed",
]

CorruptedBackup = Damaged  # a chunk, index or manifest read back from the store is damaged
StoreFailed = StoreError


class CopyError(OvaultError):
    """Base of the errors only a copy has (imageio's answers, the request)."""

    code, title = "copy_error", "Copy failed"
    msg = "Copy failed: {self.reason}"


class InvalidRequest(Invalid, CopyError):
    """The copy request itself is wrong (missing field, bad id, bad size)."""

    status = 400
    msg = "Invalid copy request: {self.reason}"

    def __init__(self, reason: str):
        super().__init__(reason)


class ImageioError(CopyError):
    """ovirt-imageio answered with an HTTP error."""

    code, title, status = "imageio_error", "ovirt-imageio error", 502
    msg = "ovirt-imageio {self.method} {self.what} failed: HTTP {self.http_status} {self.reason}"

    def __init__(self, method: str, what: str, status: int, reason: str):
        # what: the path without the host, e.g. /images/<ticket>
        super().__init__(reason.strip()[:500], method=method, what=what, http_status=status)


class TransferNotFound(ImageioError):
    """The ticket is unknown to the daemon (finalized, expired, daemon restarted)."""

    code = "transfer_not_found"


class ImageioUnavailable(Unavailable, CopyError):
    """The imageio daemon cannot be reached or dropped the connection."""

    code, title = "imageio_unavailable", "ovirt-imageio unavailable"
    msg = "ovirt-imageio at {self.url} is unavailable: {self.reason}"

    def __init__(self, url: str, reason: str):
        super().__init__(reason, url=url)


class DirtyExtentsUnavailable(CopyError):
    """An incremental copy needs a transfer of a backup with dirty=true."""

    code = "dirty_extents_unavailable"
    msg = ("The transfer does not offer dirty extents (is it a transfer of an incremental VM backup?): "
           "{self.reason}")

    def __init__(self, reason: str):
        super().__init__(reason)


class BadExtents(CopyError):
    """imageio's extents do not tile the disk."""

    code = "bad_extents"
    msg = "imageio extents are not usable: {self.reason}"

    def __init__(self, reason: str):
        super().__init__(reason)
