import asyncio
import os
import signal
import subprocess
import time

import asyncpg
import pytest

from orchestrator.catalog import EmbeddedPostgres, EmbeddedPostgresError, connect, migrate

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        await asyncio.sleep(0.05)


async def test_long_state_dir_survives_sigkill_and_restarts(state_dir_factory):
    # Deep enough that <state>/postgres/run/.s.PGSQL.5432 overflows sun_path.
    state = state_dir_factory() / ("s" * 60) / ("t" * 40)
    pg = EmbeddedPostgres(state)  # the production settings: fsync on
    assert str(pg.socket_dir).startswith("/tmp/ovault-pg-")
    await pg.start()
    try:
        pid = pg.pid
        assert pid and _alive(pid)
        st = os.stat(pg.socket_dir)
        assert oct(st.st_mode & 0o777) == "0o700"
        pool = await connect(pg.dsn)
        await migrate(pool)
        await pool.execute("INSERT INTO targets (name, url) VALUES ('t1', 'nfs://h/e')")
        await pool.close()

        # a second instance on the same state dir reuses the running server
        same = EmbeddedPostgres(state)
        await same.start()
        assert same.pid == pid and same.dsn == pg.dsn

        os.kill(pid, signal.SIGKILL)
        await _wait_dead(pid)
        assert (pg.data_dir / "postmaster.pid").exists()  # left behind
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(pg.dsn, timeout=2)

        again = EmbeddedPostgres(state)
        await again.start()
        assert again.pid and again.pid != pid
        conn = await asyncpg.connect(again.dsn)
        try:
            assert await conn.fetchval("SELECT url FROM targets WHERE name = 't1'") == "nfs://h/e"
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
        finally:
            await conn.close()
    finally:
        await EmbeddedPostgres(state).stop()
    assert not (pg.data_dir / "postmaster.pid").exists()
    assert not pg.socket_dir.exists()


async def test_stale_pidfile_naming_a_foreign_process(state_dir_factory):
    state = state_dir_factory() / "state"
    pg = EmbeddedPostgres(state, durable=False)
    assert pg.socket_dir == state / "postgres" / "run"
    await pg.start()
    await pg.stop()
    await pg.stop()  # stopping a stopped cluster is fine
    # After a crash and a reboot the recorded pid may belong to anything.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (pg.data_dir / "postmaster.pid").write_text(f"{bystander.pid}\n{pg.data_dir}\n")
        await pg.start()
        assert pg.pid not in (None, bystander.pid)
        assert bystander.poll() is None  # never touched
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "ovault"
        finally:
            await conn.close()
    finally:
        bystander.kill()
        bystander.wait()
        await pg.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="the traversal check applies when running as root")
async def test_unreachable_state_dir_is_a_clear_error(state_dir_factory):
    top = state_dir_factory()
    os.chmod(top, 0o700)
    with pytest.raises(EmbeddedPostgresError, match=r"cannot reach .*mode 0700"):
        await EmbeddedPostgres(top / "state", durable=False).start()
