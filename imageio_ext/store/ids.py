"""Validation of every name that becomes part of a path on the target.

VM, backup and disk ids come from the engine or from users; digests come from
index files that may be damaged. None of them may ever become an arbitrary
path, so each is checked against a strict pattern before use. UUIDs are
normalised to the canonical lower-case form oVirt itself uses.
"""

from __future__ import annotations

import re

from .errors import InvalidId

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def check_uuid(value: object, kind: str = "object") -> str:
    """Return ``value`` as a canonical lower-case UUID string or raise InvalidId."""
    if not isinstance(value, str):
        raise InvalidId(kind, value)
    low = value.lower()
    if _UUID_RE.fullmatch(low) is None:
        raise InvalidId(kind, value)
    return low


def check_digest_hex(value: object) -> str:
    """Return ``value`` if it is 64 lower-case hex characters, else raise InvalidId."""
    if not isinstance(value, str) or _DIGEST_RE.fullmatch(value) is None:
        raise InvalidId("chunk digest", value)
    return value


def is_uuid(value: str) -> bool:
    return _UUID_RE.fullmatch(value) is not None


def is_digest_hex(value: str) -> bool:
    return _DIGEST_RE.fullmatch(value) is not None
