"""ovault API tokens.

A token reads `ovt_<token id, 32 hex>_<secret, 43 base64url chars>`. Only its
SHA-256 is stored; the plain token is returned once, by `create`. `verify` looks
the row up by the id embedded in the token and compares the SHA-256 digests with
`hmac.compare_digest`, so the secret never takes part in an index lookup or a
short-circuiting comparison. Expiry uses the database clock. `last_used_at` is
written at most once per `touch_interval` seconds, not on every request.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime

from .db import Repository
from .errors import NotFound, wrap_errors
from .models import ApiToken, Role, parse_enum

__all__ = ["TokenRepository", "hash_token", "parse_token"]

PREFIX = "ovt_"
_FORMAT = re.compile(r"^ovt_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token(token: str) -> uuid.UUID | None:
    """The token id in a well-formed token, else None."""
    m = _FORMAT.match(token)
    return uuid.UUID(m.group(1)) if m else None


class TokenRepository(Repository):

    @wrap_errors
    async def create(self, name: str, role: str, *,
                     expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """The new token's row and the plain token (shown once, never stored)."""
        token_id = uuid.uuid4()
        plain = f"{PREFIX}{token_id.hex}_{secrets.token_urlsafe(32)}"
        row = await self._db.fetchrow(
            "INSERT INTO api_tokens (id, name, role, token_hash, expires_at) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING *",
            token_id, name, parse_enum(Role, role, "role").value, hash_token(plain), expires_at)
        return ApiToken.from_record(row), plain

    @wrap_errors
    async def verify(self, token: str, *, touch_interval: float = 60.0) -> ApiToken | None:
        """The token's row if it is genuine, unrevoked and unexpired; else None."""
        token_id = parse_token(token)
        if token_id is None:
            return None
        row = await self._db.fetchrow(
            "SELECT *, (NOT revoked AND (expires_at IS NULL OR expires_at > now())) AS live, "
            "       (last_used_at IS NULL OR last_used_at <= now() - make_interval(secs => $2)) "
            "         AS stale FROM api_tokens WHERE id = $1", token_id, float(touch_interval))
        if row is None:
            hmac.compare_digest(hash_token(token), bytes(32))  # same work either way
            return None
        if not hmac.compare_digest(hash_token(token), bytes(row["token_hash"])):
            return None
        if not row["live"]:
            return None
        if row["stale"]:
            touched = await self._db.fetchrow(
                "UPDATE api_tokens SET last_used_at = now() "
                "WHERE id = $1 AND NOT revoked AND (expires_at IS NULL OR expires_at > now()) "
                "RETURNING *", token_id)
            if touched is None:  # revoked or expired a moment ago
                return None
            return ApiToken.from_record(touched)
        return ApiToken.from_record(row)

    @wrap_errors
    async def revoke(self, token_id: uuid.UUID) -> ApiToken:
        row = await self._db.fetchrow(
            "UPDATE api_tokens SET revoked = true WHERE id = $1 RETURNING *", token_id)
        if row is None:
            raise NotFound("api token", token_id)
        return ApiToken.from_record(row)

    @wrap_errors
    async def get(self, token_id: uuid.UUID) -> ApiToken:
        row = await self._db.fetchrow("SELECT * FROM api_tokens WHERE id = $1", token_id)
        if row is None:
            raise NotFound("api token", token_id)
        return ApiToken.from_record(row)

    @wrap_errors
    async def list(self, *, include_revoked: bool = False) -> list[ApiToken]:
        rows = await self._db.fetch(
            "SELECT * FROM api_tokens WHERE $1 OR NOT revoked ORDER BY created_at, id",
            include_revoked)
        return [ApiToken.from_record(r) for r in rows]
