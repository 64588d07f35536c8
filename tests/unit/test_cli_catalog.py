"""`ovault catalog`: the DSN's password goes to a private PGPASSFILE, never to argv."""
import os
import stat

from orchestrator.cli.catalog import _passfile_line, child_env, split_password


def test_split_password_from_uris_and_keyword_dsns():
    assert split_password("postgresql://ov:p%40ss%3Aw@db.example.org:5432/ovault?sslmode=require") == \
        ("postgresql://ov@db.example.org:5432/ovault?sslmode=require", "p@ss:w")
    assert split_password("postgresql://ov@db/ovault?password=x%27y&sslmode=verify-full") == \
        ("postgresql://ov@db/ovault?sslmode=verify-full", "x'y")
    assert split_password("postgresql://ovault@/ovault?host=%2Ftmp%2Fs&port=5432") == \
        ("postgresql://ovault@/ovault?host=%2Ftmp%2Fs&port=5432", None)
    assert split_password("host=db user=ov password='a b\\'c' dbname=ovault") == \
        ("host=db user=ov dbname=ovault", "a b'c")
    assert split_password("host=db dbname=ovault") == ("host=db dbname=ovault", None)


def test_passfile_is_private_escaped_and_removed(monkeypatch):
    monkeypatch.setenv("OVAULT_ENGINE_PASSWORD", "engine-secret")
    with child_env("a:b\\c") as env:
        path = env["PGPASSFILE"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            assert f.read() == "*:*:*:*:a\\:b\\\\c\n"
        assert "OVAULT_ENGINE_PASSWORD" not in env and "PGPASSWORD" not in env
    assert not os.path.exists(path)
    with child_env(None) as env:
        assert "PGPASSFILE" not in env
    assert _passfile_line("plain") == "*:*:*:*:plain\n"
