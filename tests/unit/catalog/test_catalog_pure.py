"""The catalog's pure parts: no database needed."""
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import pytest

from orchestrator.catalog import (CatalogError, Conflict, EmbeddedPostgres, Invalid, NotFound,
                                  Retryable, Unavailable, backoff_delay, rollup_state)
from orchestrator.catalog.errors import translate, wrap_errors
from orchestrator.catalog.models import BackupState, RestoreState, TERMINAL
from orchestrator.catalog.paging import decode_cursor, encode_cursor
from orchestrator.catalog.schema import load_migrations
from orchestrator.catalog.tokens import parse_token


def test_rollup_state():
    assert rollup_state("queued", [("queued", "a", None)]) == ("queued", None)
    assert rollup_state("running", [("queued", "a", None)]) == ("running", None)
    assert rollup_state("queued", [("snapshot", "a", None), ("queued", "b", None)]) == \
        ("running", None)
    assert rollup_state("running", [("succeeded", "a", None)] * 2) == ("succeeded", None)
    assert rollup_state("running", [("succeeded", "a", None), ("canceled", "b", None)]) == \
        ("canceled", None)
    assert rollup_state("running", [("failed", "a", "x"), ("canceled", "b", None),
                                    ("failed", "c", None)]) == \
        ("failed", "2 of 3 VMs failed: a: x; c: failed")
    assert rollup_state("running", [("failed", "a", "e" * 10_000)])[1].__len__() == 4000
    # a finished job never moves again; no machines, no change
    assert rollup_state("succeeded", [("failed", "a", "x")]) == ("succeeded", None)
    assert rollup_state("running", []) == ("running", None)


def test_state_names_are_the_documented_api():
    assert [s.value for s in BackupState] == ["queued", "snapshot", "metadata", "transfer",
                                              "finalize", "cleanup", "succeeded", "failed",
                                              "canceled"]
    assert [s.value for s in RestoreState] == ["queued", "prepare", "transfer", "finalize",
                                               "cleanup", "succeeded", "failed", "canceled"]
    assert TERMINAL == {"succeeded", "failed", "canceled"}


def test_migration_sql_mirrors_the_enums():
    [initial] = [m for m in load_migrations() if m.version == 1]
    for state in set(BackupState) | set(RestoreState):
        assert f"'{state.value}'" in initial.sql


def test_migrations_are_numbered_from_one():
    ms = load_migrations()
    assert [m.version for m in ms] == list(range(1, len(ms) + 1))
    assert ms[0].name == "initial" and "CREATE TABLE jobs" in ms[0].sql
    assert len({m.checksum for m in ms}) == len(ms)


def test_cursor_round_trip_and_garbage():
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    id_ = uuid.uuid4()
    assert decode_cursor(encode_cursor(at, id_)) == (at, id_)
    for bad in ("", "!!", encode_cursor(at, id_)[:-3], "bm9waXBl"):
        with pytest.raises(Invalid):
            decode_cursor(bad)


def test_token_format():
    tid = uuid.uuid4()
    good = f"ovt_{tid.hex}_{'A' * 43}"
    assert parse_token(good) == tid
    for bad in ("", good[:-1], good + "A", good.replace("ovt_", "ovx_"), " " + good,
                f"ovt_{tid.hex.upper()}_{'A' * 43}"):
        assert parse_token(bad) is None


def test_backoff_delay():
    assert [backoff_delay(n, base=5) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert backoff_delay(1000) == 3600
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_translate_keeps_meaning():
    cases = [
        (asyncpg.UniqueViolationError("dup"), Conflict),
        (asyncpg.ForeignKeyViolationError("fk"), Conflict),
        (asyncpg.CheckViolationError("chk"), Invalid),
        (asyncpg.SerializationError("ser"), Retryable),
        (asyncpg.DeadlockDetectedError("dl"), Retryable),
        (asyncpg.AdminShutdownError("bye"), Unavailable),
        (asyncpg.ConnectionDoesNotExistError("gone"), Unavailable),
        (ConnectionRefusedError(111, "refused"), Unavailable),
        (asyncpg.UndefinedTableError("no table"), CatalogError),
    ]
    for exc, cls in cases:
        mapped = translate(exc)
        assert type(mapped) is cls, (exc, mapped)
        assert str(exc) in str(mapped)
    assert translate(KeyError("x")) is None
    assert translate(NotFound("job", 1)) is None
    assert str(NotFound("job", 7)) == "job 7 not found"
    assert issubclass(Unavailable, Retryable) and issubclass(Invalid, ValueError)


async def test_wrap_errors_chains_the_cause():
    @wrap_errors
    async def insert():
        raise asyncpg.UniqueViolationError("duplicate key value")

    with pytest.raises(Conflict) as ei:
        await insert()
    assert isinstance(ei.value.__cause__, asyncpg.UniqueViolationError)

    @wrap_errors
    async def bug():
        raise KeyError("not a database error")

    with pytest.raises(KeyError):
        await bug()


def test_socket_dir_falls_back_to_tmp_only_when_too_long():
    short = EmbeddedPostgres(Path("/var/lib/ovault"))
    assert short.socket_dir == Path("/var/lib/ovault/postgres/run")
    assert "host=%2Fvar%2Flib%2Fovault%2Fpostgres%2Frun" in short.dsn
    assert short.dsn.startswith("postgresql://ovault@/ovault?")
    long_dir = Path("/srv/" + "x" * 90)
    a, b = EmbeddedPostgres(long_dir), EmbeddedPostgres(long_dir)
    assert a.socket_dir == b.socket_dir  # stable across restarts
    assert str(a.socket_dir).startswith("/tmp/ovault-pg-")
    assert len(str(a.socket_dir / ".s.PGSQL.5432")) < 107
    assert EmbeddedPostgres(Path("/srv/" + "y" * 90)).socket_dir != a.socket_dir
