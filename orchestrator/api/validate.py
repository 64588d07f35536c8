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
    except ValueError as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


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
    if not isinstance(v, str) or not v.strip() or len(v) > max_len:
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
