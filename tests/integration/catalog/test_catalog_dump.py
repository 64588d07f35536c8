"""`ovault catalog dump` / `restore` on real PostgreSQL: everything ovault keeps
only in the catalog (tokens, webhooks, policies, backups, job history) survives a
dump and a restore into a fresh database, through the command line."""
import asyncio
import os
import stat
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from orchestrator.catalog import Catalog, NewMachine, connect
from orchestrator.cli import main

from ..conftest import _drop_database, _new_database

pytestmark = pytest.mark.integration


def _config(tmp_path, dsn, name):
    p = tmp_path / f"{name}.toml"
    p.write_text(f'state_dir = "{tmp_path / "state"}"\n[database]\ndsn = "{dsn}"\n')
    return str(p)


async def _cli(*argv):
    return await asyncio.to_thread(main, list(argv))


async def _migrations(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


async def test_dump_and_restore_into_a_fresh_catalog(catalog, dsn, embedded_pg, tmp_path, capsys):
    future = datetime.now(timezone.utc) + timedelta(days=30)
    tok, plain = await catalog.tokens.create("ops", "admin", expires_at=future)
    _, revoked_plain = await catalog.tokens.create("gone", "viewer")
    await catalog.tokens.revoke(_.id)
    hook = await catalog.webhooks.create("https://hooks.example.org/x", "s3cret'\"", ["backup.succeeded"])
    target = await catalog.targets.create("nfs1", "nfs://10.0.0.1/export", {"chunk_size": 4 << 20})
    job = await catalog.jobs.create("backup", [NewMachine("vm-1", "db01")])
    b = await catalog.backups.create(vm_id="vm-1", vm_name="db01", mode="full", method="cbt",
                                     job_id=job.id, target_id=target.id, config={"ovf": "<ovf/>"})
    await catalog.backups.complete(b.id, size_bytes=1 << 30, new_bytes=1 << 30,
                                   consistency="crash", checkpoint_id="cp-1")
    pol = await catalog.policies.create({"name": "nightly", "schedule": "0 2 * * *",
                                         "timezone": "UTC", "retention": {"keep_daily": 7},
                                         "vm_ids": ["vm-1"]})
    before = await _migrations(dsn)

    out = tmp_path / "catalog.dump"
    assert await _cli("catalog", "dump", str(out), "--config", _config(tmp_path, dsn, "src")) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert not list(tmp_path.glob(".*.partial"))
    assert "dumped catalog" in capsys.readouterr().out
    # a second dump does not overwrite silently
    assert await _cli("catalog", "dump", str(out), "--config", _config(tmp_path, dsn, "src")) == 1
    assert "--overwrite" in capsys.readouterr().err

    name = await _new_database(embedded_pg, "template0")  # a fresh, empty catalog
    fresh = embedded_pg.dsn_for(name)
    try:
        cfg = _config(tmp_path, fresh, "dst")
        assert await _cli("catalog", "restore", str(out), "--config", cfg, "--json") == 0
        assert '"api_tokens": 2' in capsys.readouterr().out
        assert await _migrations(fresh) == before
        pool = await connect(fresh, min_size=1, max_size=2)
        try:
            c = Catalog(pool)
            assert (await c.tokens.verify(plain)).id == tok.id
            assert await c.tokens.verify(revoked_plain) is None
            hooks = await c.webhooks.list()
            assert [(h.id, h.url, h.secret) for h in hooks] == [(hook.id, hook.url, "s3cret'\"")]
            got = await c.backups.get(b.id)
            assert (got.status, got.checkpoint_id, got.vm_name) == ("succeeded", "cp-1", "db01")
            assert [p.name for p in await c.policies.list()] == [pol.name]
            assert (await c.jobs.get(job.id)).id == job.id
            # the restored catalog keeps working: new rows get fresh ids from its sequences
            _, again = await c.tokens.create("after", "viewer")
            assert await c.tokens.verify(again) is not None
        finally:
            await pool.close()
        # it now holds backups and tokens: a second restore needs --force ...
        assert await _cli("catalog", "restore", str(out), "--config", cfg) == 1
        assert "--force" in capsys.readouterr().err
        # ... and is refused while a session (a running `serve`) uses it
        busy = await asyncpg.connect(fresh)
        try:
            assert await _cli("catalog", "restore", str(out), "--config", cfg, "--force") == 1
            assert "stop `ovault serve` first" in capsys.readouterr().err
        finally:
            await busy.close()
        assert await _cli("catalog", "restore", str(out), "--config", cfg, "--force") == 0
        conn = await asyncpg.connect(fresh)
        try:  # replaced, not merged: the token made after the first restore is gone
            assert await conn.fetchval("SELECT count(*) FROM api_tokens") == 2
        finally:
            await conn.close()
    finally:
        await _drop_database(embedded_pg, name)


async def test_restore_refuses_a_newer_schema_and_leaves_the_catalog(catalog, dsn, embedded_pg,
                                                                       tmp_path, capsys):
    await catalog.tokens.create("ops", "admin")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                           "VALUES (999, 'future', 'x')")
    finally:
        await conn.close()
    out = tmp_path / "newer.dump"
    assert await _cli("catalog", "dump", str(out), "--config", _config(tmp_path, dsn, "src")) == 0
    name = await _new_database(embedded_pg, "ovault_test_template")  # migrated, empty
    fresh = embedded_pg.dsn_for(name)
    try:
        before = await _migrations(fresh)
        capsys.readouterr()
        assert await _cli("catalog", "restore", str(out), "--config", _config(tmp_path, fresh, "d")) == 1
        err = capsys.readouterr().err
        assert "newer ovault" in err and "unchanged" in err
        assert await _migrations(fresh) == before  # the transaction rolled back
    finally:
        await _drop_database(embedded_pg, name)


async def test_restore_rejects_a_file_that_is_not_a_dump(dsn, tmp_path, capsys):
    bad = tmp_path / "x.dump"
    bad.write_text("not a dump")
    assert await _cli("catalog", "restore", str(bad), "--config", _config(tmp_path, dsn, "d")) == 1
    assert "is not a catalog dump" in capsys.readouterr().err
