"""Opaque keyset cursors over (created_at DESC, id DESC)."""
from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from .errors import Invalid

MAX_LIMIT = 500


def encode_cursor(created_at: datetime, id_: Any) -> str:
    raw = f"{created_at.isoformat()}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, id_ = raw.split("|", 1)
        created = datetime.fromisoformat(ts)
        if created.tzinfo is None:
            raise ValueError("naive timestamp")
        return created, uuid.UUID(id_)
    except (ValueError, UnicodeDecodeError) as e:
        raise Invalid(f"bad page cursor {cursor!r}") from e


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be 1..{MAX_LIMIT}, got {limit}")
    return limit


class Where:
    """Collects `AND`ed conditions with numbered parameters."""

    def __init__(self) -> None:
        self.conds: list[str] = []
        self.args: list[Any] = []

    def add(self, template: str, *values: Any) -> None:
        """`template` uses {} for each value, in order."""
        marks = []
        for v in values:
            self.args.append(v)
            marks.append(f"${len(self.args)}")
        self.conds.append(template.format(*marks))

    def sql(self) -> str:
        return ("WHERE " + " AND ".join(self.conds)) if self.conds else ""

    def keyset(self, cursor: str | None, table: str) -> None:
        if cursor:
            created, id_ = decode_cursor(cursor)
            self.add(f"({table}.created_at, {table}.id) < ({{}}, {{}})", created, id_)
