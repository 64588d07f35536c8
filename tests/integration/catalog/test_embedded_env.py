"""The embedded PostgreSQL does not inherit ovault's environment: secrets given
to ovault through environment variables never reach initdb, pg_ctl or any
server process (whose environment other tools could read)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.catalog import EmbeddedPostgres
from orchestrator.catalog.embedded import server_env

SECRET = "s3cret-engine-password-should-stay-home"


def test_server_env_keeps_only_the_basics():
    env = server_env({"PATH": "/usr/bin", "HOME": "/root", "OVAULT_ENGINE_PASSWORD": SECRET,
                      "PGPASSWORD": "x", "PGDATA": "/elsewhere", "AWS_SECRET_ACCESS_KEY": "y"})
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


async def test_the_running_server_has_none_of_ovaults_variables(monkeypatch):
    monkeypatch.setenv("OVAULT_ENGINE_PASSWORD", SECRET)
    monkeypatch.setenv("OVAULT_DATABASE_DSN", "postgresql://u:" + SECRET + "@db/ovault")
    monkeypatch.setenv("PGPASSWORD", SECRET)
    d = Path(tempfile.mkdtemp(prefix="ovault-pgenv-", dir="/tmp"))
    os.chmod(d, 0o755)  # as root the server runs as `postgres`, which must walk in
    pg = EmbeddedPostgres(d / "state", durable=False)
    try:
        await pg.start()
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        # pg_ctl itself sets PGDATA (and PostgreSQL may add its own PG_* variables)
        assert names and not any(n.startswith("OVAULT_") or n == "PGPASSWORD" for n in names), names
        assert names <= {"PATH", "HOME", "USER", "LOGNAME", "TZ", "TMPDIR", "LC_ALL", "LANG", "PWD"} | {
            n for n in names if n.startswith("PG") and n != "PGPASSWORD"}, names
        assert SECRET.encode() not in b"\0".join(environ)
    finally:
        await pg.stop()
        shutil.rmtree(d, ignore_errors=True)
