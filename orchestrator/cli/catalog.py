"""`ovault catalog dump|restore`: a copy of the catalog itself (docs/install.md).

The catalog holds what the backup target does not: API tokens (their hashes),
webhooks and their delivery history, policies, job and event history. `ovault
import` rebuilds backups from the target; this keeps everything else.

- `dump FILE` runs `pg_dump --format=custom` on the configured catalog (the
  external `database.dsn`, or the embedded cluster in the state directory,
  started for the time of the dump when no `serve` runs it) into FILE, written
  0600 (webhook secrets and token hashes are in it) and renamed into place only
  when complete.
- `restore FILE` replaces the catalog with the dump in one transaction: the
  `public` schema is dropped and recreated, `pg_restore`'s script is run by
  `psql --single-transaction`, and a dump whose schema is newer than this
  ovault's migrations is refused inside that transaction (nothing changes).
  Then the shipped migrations are applied (a dump from an older ovault comes
  up to date). It refuses while other sessions use the catalog (stop `ovault
  serve` first) and, without ``--force``, when the catalog already holds
  backups or tokens.

The PostgreSQL tools are the embedded server's (`/usr/lib/postgresql/<major>/bin`,
found as `embedded.find_bindir` finds pg_ctl), else the ones on PATH. A password
in the DSN never reaches a command line: it goes to the child in a 0600
PGPASSFILE that is removed afterwards; the child's environment is otherwise
the scrubbed one the embedded server uses.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

from .common import CliError, add_config_options, load_config
from .local_catalog import catalog_dsn


def register(sub) -> None:
    cat = sub.add_parser("catalog", help="dump or restore the catalog database (tokens, webhooks, policies, history)")
    cs = cat.add_subparsers(dest="catalog_cmd", required=True, metavar="ACTION")
    d = cs.add_parser("dump", help="pg_dump the catalog into FILE (custom format, mode 0600)")
    d.add_argument("file", help="where to write the dump")
    d.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    r = cs.add_parser("restore", help="replace the catalog with a dump (stop `ovault serve` first)")
    r.add_argument("file", help="a file written by `ovault catalog dump`")
    r.add_argument("--force", action="store_true",
                   help="replace a catalog that already holds backups or tokens")
    for x in (d, r):
        add_config_options(x)
        x.set_defaults(func=lambda args: asyncio.run(run(args)))


async def run(args) -> int:
    cfg = load_config(args)
    async with catalog_dsn(cfg) as (dsn, bindir):
        if args.catalog_cmd == "dump":
            summary = await dump(dsn, Path(args.file), bindir=bindir, overwrite=args.overwrite)
            what = "dumped"
        else:
            summary = await restore(dsn, Path(args.file), bindir=bindir, force=args.force)
            what = "restored"
    if getattr(args, "json", False):
        import json
        print(json.dumps({"action": what, "file": str(args.file), **summary}))
    else:
        counts = ", ".join(f"{v} {k}" for k, v in summary["rows"].items())
        print(f"{what} catalog (schema version {summary['schema_version']}; {counts}) "
              f"{'to' if what == 'dumped' else 'from'} {args.file}")
    return 0


def tool(name: str, bindir: Path | None = None) -> str:
    """The PostgreSQL client program `name`: beside the embedded server's
    binaries, else the newest Debian server bindir, else PATH."""
    dirs = [bindir] if bindir else []
    if not dirs:
        from ..catalog.embedded import find_bindir
        with contextlib.suppress(Exception):
            dirs.append(find_bindir())
    for d in dirs:
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    found = shutil.which(name)
    if not found:
        raise CliError(f"{name} not found (install the PostgreSQL client programs, "
                       f"e.g. postgresql-client)")
    return found


_KW_PASSWORD = re.compile(r"""(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)""")


def split_password(dsn: str) -> tuple[str, str | None]:
    """(the DSN without its password, the password or None). URIs lose the
    password of their user-info and a `password=` query parameter; keyword
    DSNs their `password=` pair."""
    if "://" not in dsn:
        m = _KW_PASSWORD.search(dsn)
        if not m:
            return dsn, None
        value = m.group(1)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        return (dsn[:m.start()] + dsn[m.end():]).strip(), value
    u = urllib.parse.urlsplit(dsn)
    password = urllib.parse.unquote(u.password) if u.password is not None else None
    netloc = u.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    if len(kept) != len(query):
        password = next(v for k, v in query if k == "password")
    clean = urllib.parse.urlunsplit((u.scheme, netloc, u.path, urllib.parse.urlencode(kept), u.fragment))
    return clean, password


def _passfile_line(password: str) -> str:
    esc = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{esc}\n"


@contextlib.contextmanager
def child_env(password: str | None):
    """The environment of a pg_dump/pg_restore/psql child: the scrubbed server
    environment, plus a private PGPASSFILE when the DSN had a password."""
    from ..catalog.embedded import server_env
    env = server_env()
    if password is None:
        yield env
        return
    fd, path = tempfile.mkstemp(prefix="ovault-pgpass-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_passfile_line(password))
        env["PGPASSFILE"] = path
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def _summary(dsn: str) -> dict:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval(
            "SELECT max(version) FROM schema_migrations") if await conn.fetchval(
            "SELECT to_regclass('public.schema_migrations') IS NOT NULL") else None
        rows = {}
        for table in ("backups", "api_tokens", "webhooks", "policies", "jobs"):
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"):
                rows[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return {"schema_version": version, "rows": rows}
    finally:
        await conn.close()


def _run(argv: list[str], env: dict, what: str, stdin=None) -> None:
    p = subprocess.run(argv, env=env, stdin=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise CliError(f"{what} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-1500:]}")


async def dump(dsn: str, path: Path, *, bindir: Path | None = None, overwrite: bool = False) -> dict:
    """pg_dump the catalog at `dsn` into `path` (custom format, 0600)."""
    if path.exists() and not overwrite:
        raise CliError(f"{path} exists (--overwrite replaces it)")
    summary = await _summary(dsn)
    if summary["schema_version"] is None:
        raise CliError("the database holds no ovault catalog (no schema_migrations table)")
    clean, password = split_password(dsn)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        with child_env(password) as env:
            await asyncio.to_thread(_run, [tool("pg_dump", bindir), "--format=custom", "--no-owner",
                                           "--no-privileges", f"--file={partial}", f"--dbname={clean}"],
                                    env, "pg_dump")
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    return summary


async def _check_target(dsn: str, force: bool) -> None:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")
    finally:
        await conn.close()
    if others:
        raise CliError(f"{others} other session(s) use this catalog: stop `ovault serve` first")
    held = {k: v for k, v in (await _summary(dsn))["rows"].items()
            if k in ("backups", "api_tokens") and v}
    if held and not force:
        what = ", ".join(f"{v} {k}" for k, v in held.items())
        raise CliError(f"the catalog already holds {what}; --force replaces it with the dump")


async def restore(dsn: str, path: Path, *, bindir: Path | None = None, force: bool = False) -> dict:
    """Replace the catalog at `dsn` with the dump in `path` (one transaction),
    then apply the shipped migrations."""
    from .. import catalog as cat
    from ..catalog.schema import load_migrations
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    await _check_target(dsn, force)
    clean, password = split_password(dsn)
    newest = len(load_migrations())
    guard = ("DO $$ BEGIN IF (SELECT max(version) FROM public.schema_migrations) > %d THEN "
             "RAISE EXCEPTION 'the dump comes from a newer ovault (schema version %%), this one knows %d', "
             "(SELECT max(version) FROM public.schema_migrations); END IF; END $$;" % (newest, newest))
    with child_env(password) as env:
        lst = await asyncio.to_thread(subprocess.run, [tool("pg_restore", bindir), "--list", str(path)],
                                      env=env, capture_output=True, text=True)
        if lst.returncode != 0:
            raise CliError(f"{path} is not a catalog dump: {lst.stderr.strip()[-500:]}")
        if "TABLE public schema_migrations" not in lst.stdout and " schema_migrations " not in lst.stdout:
            raise CliError(f"{path} holds no ovault catalog (no schema_migrations table)")
        script = await asyncio.to_thread(subprocess.run, [tool("pg_restore", bindir), "--no-owner",
                                                          "--no-privileges", "--file=-", str(path)],
                                         env=env, capture_output=True)
        if script.returncode != 0:
            raise CliError(f"pg_restore failed: {script.stderr.decode(errors='replace').strip()[-1500:]}")
        psql = [tool("psql", bindir), "--no-psqlrc", "--quiet", "--single-transaction",
                "--set=ON_ERROR_STOP=1", f"--dbname={clean}",
                "--command=DROP SCHEMA IF EXISTS public CASCADE",
                "--command=CREATE SCHEMA public", "--file=-", f"--command={guard}"]
        p = await asyncio.to_thread(subprocess.run, psql, env=env, input=script.stdout,
                                    capture_output=True)
        if p.returncode != 0:
            raise CliError("restore failed, the catalog is unchanged: "
                           + p.stderr.decode(errors="replace").strip()[-1500:])
    pool = await cat.connect(dsn, min_size=1, max_size=1)
    try:
        await cat.migrate(pool)
    finally:
        await pool.close()
    return await _summary(dsn)
