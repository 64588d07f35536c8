import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.catalog import Invalid, NotFound

pytestmark = pytest.mark.integration


async def test_token_is_shown_once_and_only_its_hash_is_stored(catalog, pool):
    row, plain = await catalog.tokens.create("ci", "operator")
    assert plain.startswith("ovt_" + row.id.hex + "_") and len(plain) == 4 + 32 + 1 + 43
    async with pool.acquire() as c:
        stored = await c.fetchrow("SELECT * FROM api_tokens WHERE id = $1", row.id)
    assert bytes(stored["token_hash"]) == hashlib.sha256(plain.encode()).digest()
    assert plain.split("_", 2)[2] not in str(dict(stored))
    assert (row.role, row.revoked, row.last_used_at) == ("operator", False, None)
    with pytest.raises(Invalid):
        await catalog.tokens.create("x", "root")


async def test_verify_accepts_only_the_genuine_live_token(catalog):
    row, plain = await catalog.tokens.create("ci", "viewer")
    ok = await catalog.tokens.verify(plain, touch_interval=0)
    assert ok is not None and ok.id == row.id and ok.role == "viewer"
    assert ok.last_used_at is not None
    # same id, other secret; truncated; garbage; unknown id
    forged = plain[:-1] + ("A" if plain[-1] != "A" else "B")
    for bad in (forged, plain[:-1], "Bearer " + plain, "", "ovt_" + "0" * 32 + "_" + "a" * 43):
        assert await catalog.tokens.verify(bad) is None
    # last_used_at is throttled
    again = await catalog.tokens.verify(plain, touch_interval=3600)
    assert again.last_used_at == ok.last_used_at
    later = await catalog.tokens.verify(plain, touch_interval=0)
    assert later.last_used_at > ok.last_used_at


async def test_expired_and_revoked_tokens_fail(catalog):
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    _, expired = await catalog.tokens.create("old", "admin", expires_at=past)
    assert await catalog.tokens.verify(expired) is None
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    row, live = await catalog.tokens.create("new", "admin", expires_at=future)
    assert (await catalog.tokens.verify(live)).id == row.id
    revoked = await catalog.tokens.revoke(row.id)
    assert revoked.revoked
    assert await catalog.tokens.verify(live) is None
    assert [t.name for t in await catalog.tokens.list()] == ["old"]
    assert {t.name for t in await catalog.tokens.list(include_revoked=True)} == {"old", "new"}
    with pytest.raises(NotFound):
        await catalog.tokens.revoke(__import__("uuid").uuid4())
