"""Webhook signatures.

    X-Ovault-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The timestamp is inside the MAC, so a receiver that refuses signatures older
than a few minutes refuses replays too. `v1` names the scheme; a later one can
be sent beside it during a migration (`t=…,v1=…,v2=…`).
"""
from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Ovault-Signature"
TOLERANCE = 300.0


def signature(secret: str, body: bytes, t: int) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def sign(secret: str, body: bytes, now: float | None = None) -> str:
    return signature(secret, body, int(time.time() if now is None else now))


def verify(secret: str, header: str, body: bytes, *, tolerance: float = TOLERANCE,
           now: float | None = None) -> bool:
    """What a receiver does: check the MAC in constant time and the age."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - t) > tolerance:
        return False
    want = signature(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(want, parts.get("v1", ""))
