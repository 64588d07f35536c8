"""ovault's one error family.

Every error ovault raises on purpose is an `OvaultError`: a message template
over typed attributes (in the style of ovirt-imageio's ``errors.py``), a
stable ``code`` and the HTTP status it stands for. Subclasses name one meaning
each, not one call site; a package's own errors (the store's, the copy
engine's, the catalog's, the orchestrator's) derive from the classes here, the
shared meaning first, so ``except NotFound`` catches a catalog row and a store
backup that are not there alike.

The code is what crosses process boundaries: the mover reports a failed copy as
``{"code": ..., "message": ...}`` (`OvaultError.to_dict`) and the orchestrator
rebuilds the same class from it (`from_dict`); the API's problem+json ``type``
is the code with hyphens (`OvaultError.slug`). This module lives in the leaf
package (`imageio_ext` imports neither the orchestrator nor the machines) so
every package can use it.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, ClassVar

__all__ = [
    "OvaultError",
    "Invalid",
    "BadRequest",
    "NotFound",
    "Conflict",
    "Unauthorized",
    "Forbidden",
    "Unavailable",
    "TargetUnavailable",
    "TargetFull",
    "TargetPermissionDenied",
    "ConfigError",
    "from_dict",
    "os_error_text",
    "target_error",
]

_BY_CODE: dict[str, type["OvaultError"]] = {}


class OvaultError(Exception):
    """Base of every deliberate ovault error.

    ``msg`` is formatted with ``self`` when the error is shown, so subclasses
    declare their attributes and a template, nothing else.
    """

    code: ClassVar[str] = "error"  # stable; crosses the mover API and names the problem type
    title: ClassVar[str] = "Error"  # problem+json title
    status: ClassVar[int] = 500  # HTTP status when it reaches an API
    expose: ClassVar[bool] = True  # False: a 5xx whose text may carry internals (hidden from clients)
    msg: ClassVar[str] = "{self.reason}"

    def __init__(self, reason: str = "", **attrs: Any):
        self.reason = reason
        for k, v in attrs.items():
            setattr(self, k, v)
        super().__init__(reason)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # The first class declaring a code owns it on the wire (subclasses that
        # merely refine the text, e.g. the catalog's NotFound, share it).
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __str__(self) -> str:
        text = self.__dict__.get("_text")
        if text is not None:
            return text
        try:
            return self.msg.format(self=self)
        except (AttributeError, KeyError, IndexError) as e:  # a subclass forgot an attribute
            return f"{type(self).__name__}: {self.args!r} ({e})"

    @property
    def slug(self) -> str:
        """The problem+json type slug: the code with hyphens (``not_found`` -> ``not-found``)."""
        return self.code.replace("_", "-")

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


def from_dict(doc: Any, default: type[OvaultError] = OvaultError) -> OvaultError:
    """The error a peer reported as ``{"code", "message"}`` (or as a problem+json
    body), as its own class.

    The attributes of the original are not sent, only its rendered message, so
    the instance shows that message verbatim. An unknown code becomes
    ``default`` carrying that code.
    """
    if not isinstance(doc, dict):
        doc = {"message": str(doc)}
    code = str(doc.get("code") or "")
    if not code and isinstance(doc.get("type"), str):  # a problem+json body
        code = doc["type"].rsplit("/", 1)[-1].rsplit(":", 1)[-1].replace("-", "_")
    message = str(doc.get("message") or doc.get("detail") or code or "unknown error")
    cls = _BY_CODE.get(code, default)
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    e.reason = message
    e._text = message
    if code and cls.code != code:
        e.code = code  # type: ignore[misc]  # keep the peer's code when we do not know it
    return e


class Invalid(OvaultError, ValueError):
    """A value the caller sent is not acceptable."""

    code, title, status = "invalid_request", "Invalid request", 422


class BadRequest(OvaultError):
    """The request cannot be parsed at all (not JSON, wrong content type)."""

    code, title, status = "bad_request", "Bad request", 400


class NotFound(OvaultError):
    msg = "{self.entity} {self.key} not found"
    code, title, status = "not_found", "Not found", 404

    def __init__(self, entity: str, key: Any):
        super().__init__(entity=entity, key=key)


class Conflict(OvaultError):
    code, title, status = "conflict", "Conflict", 409


class Unauthorized(OvaultError):
    code, title, status = "unauthorized", "Authentication required", 401


class Forbidden(OvaultError):
    code, title, status = "forbidden", "Forbidden", 403


class Unavailable(OvaultError):
    """Something ovault depends on cannot be reached now; trying later may work."""

    code, title, status = "unavailable", "Service unavailable", 503


class TargetUnavailable(Unavailable):
    """The backup target cannot be reached (NFS server down, mount failed)."""

    msg = "Backup target {self.url} is unavailable: {self.reason}"
    code, title = "target_unavailable", "Backup target unavailable"

    def __init__(self, url: str, reason: str):
        super().__init__(reason, url=url)


class TargetFull(OvaultError):
    """The backup target has no space left (ENOSPC or a quota); ``free`` is
    what the file system still reported free, in bytes, when known."""

    msg = "Backup target {self.url} is full: {self.reason}{self._free}"
    code, title, status = "target_full", "Backup target full", 507

    def __init__(self, url: str, reason: str, free: int | None = None):
        super().__init__(reason, url=url, free=free)

    @property
    def _free(self) -> str:
        return "" if self.free is None else f" ({self.free} bytes free)"


class TargetPermissionDenied(OvaultError):
    """The target refuses a file operation (export options, ownership, read-only)."""

    msg = "Permission denied on backup target {self.url}: {self.reason}"
    code, title, status = "target_permission_denied", "Backup target refused access", 502

    def __init__(self, url: str, reason: str):
        super().__init__(reason, url=url)


class ConfigError(OvaultError):
    msg = "configuration: {self.reason}"
    code, title, status = "config_error", "Configuration error", 500


def os_error_text(e: BaseException) -> str:
    """An exception in words, an OSError with its errno text: ``[Errno 28] No space left on device``."""
    if isinstance(e, OSError) and e.errno:
        text, std = str(e), os.strerror(e.errno)
        return text if std in text else f"{text} ({std})"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def target_error(e: OSError, url: str, free: int | None = None) -> OvaultError | None:
    """The domain error for an OSError the target raised, or None if it has no
    meaning of its own. ``free``: the bytes the target reports free, if known."""
    if e.errno in (_errno.ENOSPC, _errno.EDQUOT):
        return TargetFull(url, os_error_text(e), free)
    if e.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        return TargetPermissionDenied(url, os_error_text(e))
    return None
