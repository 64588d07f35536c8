"""Request validation at the edge: small, explicit checks with clear messages."""
from __future__ import annotations

import json
import re
import uuid

from aiohttp import web

from ..errors import BadRequest, Invalid

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


async def json_body(request: web.Request) -> dict:
    if request.content_type not in ("application/json", ""):
        raise BadRequest(f"expected application/json, got {request.content_type}")
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"malformed JSON: {str(e)[:200]}") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    _no_nul(body, 0)
    return body


def _no_nul(x, depth: int) -> None:
    """PostgreSQL text and jsonb cannot hold NUL: refuse it here, not with a 500 there."""
    if depth > 20:
        raise Invalid("the body is nested too deeply")
    if isinstance(x, str):
        if "\x00" in x:
            raise Invalid("strings must not contain NUL characters")
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("strings must be valid Unicode (no lone surrogates)") from None
    elif isinstance(x, dict):
        for k, val in x.items():
            _no_nul(k, depth + 1)
            _no_nul(val, depth + 1)
    elif isinstance(x, list):
        for val in x:
            _no_nul(val, depth + 1)


def no_unknown(body: dict, allowed: set):
    extra = set(body) - allowed
    if extra:
        raise Invalid(f"unknown fields: {', '.join(sorted(extra))}")


def uuid_str(v, name: str) -> str:
    if not isinstance(v, str) or not UUID_RE.match(v):
        raise Invalid(f"{name} must be a UUID")
    return v.lower()


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    v = request.match_info[name]
    if not UUID_RE.match(v):
        raise Invalid(f"{name} must be a UUID")
    return uuid.UUID(v)


def enum(v, name: str, allowed, default=None):
    if v is None:
        return default
    if v not in allowed:
        raise Invalid(f"{name} must be one of {', '.join(allowed)}")
    return v


def opt_bool(v, name: str, default=False) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        raise Invalid(f"{name} must be true or false")
    return v


def opt_str(v, name: str, max_len=255, pattern=None):
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip() or len(v) > max_len or "\x00" in v:
        raise Invalid(f"{name} must be a non-empty string of at most {max_len} characters")
    if pattern and not re.match(pattern, v):
        raise Invalid(f"{name} has characters that are not allowed")
    return v


def limit(request, default=50, maximum=500) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise Invalid("limit must be an integer") from None
    if not 1 <= n <= maximum:
        raise Invalid(f"limit must be between 1 and {maximum}")
    return n


def query_bool(raw, name: str):
    """A boolean query parameter: true/false/1/0, or None when absent."""
    if raw is None:
        return None
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise Invalid(f"{name} must be true or false")


def opt_int(raw, name: str, minimum: int, maximum: int):
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        try:
            raw = int(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise Invalid(f"{name} must be an integer") from None
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise Invalid(f"{name} must be an integer")
    if not minimum <= raw <= maximum:
        raise Invalid(f"{name} must be between {minimum} and {maximum}")
    return raw


def str_list(v, name: str, *, max_items=100, max_len=200, pattern=None) -> list[str]:
    if not isinstance(v, list) or len(v) > max_items:
        raise Invalid(f"{name} must be a list of at most {max_items} strings")
    out = []
    for x in v:
        if not isinstance(x, str) or not x or len(x) > max_len or (pattern and not re.match(pattern, x)):
            raise Invalid(f"{name} has an invalid item {str(x)[:50]!r}")
        out.append(x)
    return out
