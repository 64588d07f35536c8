"""A private PostgreSQL cluster inside ovault's state directory.

With no DSN configured, ovault runs the system's PostgreSQL binaries (Debian's
`/usr/lib/postgresql/<major>/bin`) on a cluster of its own:

    <state_dir>/postgres/          owned by the server user, 0700
        data/                      PGDATA (initdb'ed into data.init, then renamed)
        run/                       unix socket directory (if its path is short enough)
        postgres.log               server log (pg_ctl -l)

Design notes:
- The server listens on a unix socket only (`listen_addresses=''`) in a directory
  only the server user can enter, and the socket itself is 0700, so `trust`
  authentication does not open the database to other local users.
- `initdb` and `pg_ctl` refuse to run as root. When ovault runs as root they are
  run as the `postgres` OS user, which owns `<state_dir>/postgres`; every parent
  folder must then be traversable by that user (checked, with a clear error).
- A unix socket path must fit `sun_path` (108 bytes with the NUL). If
  `<state_dir>/postgres/run/.s.PGSQL.5432` is longer, the socket lives in
  `/tmp/ovault-pg-<hash of the state dir>` instead (created 0700, ownership checked
  so another local user cannot plant it).
- The tools run with a scrubbed environment (`server_env`): ovault's secrets in
  its environment are not inherited by initdb, pg_ctl or the server.
- `start()` is idempotent: it initialises the cluster once (atomically: a half-done
  initdb is thrown away), reuses a server that is already running, and removes a
  `postmaster.pid` left behind by a SIGKILLed server when its pid now belongs to some
  other process (PostgreSQL itself handles the dead-pid case). After a SIGKILL the
  old backends may hold the shared memory for a moment, so starting is retried.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import hashlib
import os
import pwd
import shlex
import shutil
import stat
import urllib.parse
from pathlib import Path

import asyncpg

from imageio_ext.retry import retrying

from .errors import EmbeddedPostgresError

__all__ = ["EmbeddedPostgres", "find_bindir"]

SUPERUSER = "ovault"
DATABASE = "ovault"
PORT = 5432
# sun_path is 108 bytes including the terminating NUL.
_SUN_PATH_MAX = 107
_SOCKET_NAME = f".s.PGSQL.{PORT}"
_START_ATTEMPTS = 20


class _StartFailed(Exception):
    """One `pg_ctl start` that did not work (its output is the message)."""


def find_bindir() -> Path:
    """The newest `/usr/lib/postgresql/<major>/bin` holding initdb and pg_ctl."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        major = Path(d).parent.name
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            try:
                found.append((float(major), Path(d)))
            except ValueError:
                continue
    if not found:
        raise EmbeddedPostgresError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
            "(install the Debian package 'postgresql')")
    return max(found)[1]


def _socket_path_fits(directory: Path) -> bool:
    return len(os.fsencode(str(directory / _SOCKET_NAME))) <= _SUN_PATH_MAX


class EmbeddedPostgres:
    """ovault's own PostgreSQL cluster under `state_dir`.

    `durable=False` (tests only) skips fsync in initdb and in the server; the
    cluster then survives a killed server but not a machine crash.
    """

    def __init__(self, state_dir: Path | str, *, bindir: Path | None = None,
                 durable: bool = True, start_timeout: float = 60.0):
        self.state_dir = Path(state_dir).absolute()
        self.root = self.state_dir / "postgres"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._bindir = bindir
        self.durable = durable
        self.start_timeout = start_timeout
        run = self.root / "run"
        if _socket_path_fits(run):
            self.socket_dir = run
        else:
            digest = hashlib.sha256(os.fsencode(str(self.state_dir))).hexdigest()[:16]
            self.socket_dir = Path("/tmp") / f"ovault-pg-{digest}"
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._run_as: pwd.struct_passwd | None = None
        self._user_resolved = False

    # -- public ---------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    def dsn_for(self, database: str) -> str:
        host = urllib.parse.quote(str(self.socket_dir), safe="")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={PORT}"

    @property
    def dsn(self) -> str:
        """DSN of the `ovault` database, for `asyncpg.connect`/`create_pool`."""
        return self.dsn_for(DATABASE)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, if the file is there."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    async def start(self) -> None:
        """Initialise (once) and start the cluster; create the ovault database."""
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            await self._initdb()
        if not await self._running():
            self._remove_foreign_pidfile()
            await self._pg_ctl_start()
        await self._ensure_database()

    async def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are rolled back)."""
        self._resolve_user()
        if not (self.data_dir / "PG_VERSION").exists() or not await self._running():
            return
        rc, out = await self._run(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data_dir),
                                  "-m", "fast", "-w", "-t", str(int(self.start_timeout)))
        if rc != 0 and await self._running():
            raise EmbeddedPostgresError(f"pg_ctl stop failed ({rc}): {out}")
        if self.socket_dir.parent == Path("/tmp"):
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()  # only if empty: the server removed its socket

    # -- steps ----------------------------------------------------------------

    def _resolve_user(self) -> None:
        """Whom the server runs as: ourselves, or `postgres` when we are root."""
        if self._user_resolved:
            return
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise EmbeddedPostgresError(
                    "running as root needs the 'postgres' OS user (initdb refuses root)")
            self._uid, self._gid, self._run_as = pw.pw_uid, pw.pw_gid, pw
        self._user_resolved = True

    def _prepare_dirs(self) -> None:
        self._resolve_user()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._own_dir(self.root)
        if self._run_as is not None:
            self._check_traversable(self.root)
        if self.socket_dir.parent == Path("/tmp"):
            self._own_tmp_dir(self.socket_dir)
        else:
            self._own_dir(self.socket_dir)

    def _own_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
        if (st.st_uid, st.st_gid) != (self._uid, self._gid):
            os.chown(path, self._uid, self._gid)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)

    def _own_tmp_dir(self, path: Path) -> None:
        # /tmp is shared: never follow a symlink or adopt a directory someone
        # else created there.
        try:
            path.mkdir(mode=0o700)
            os.chown(path, self._uid, self._gid)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != self._uid:
            raise EmbeddedPostgresError(
                f"socket directory {path} exists but is not a directory owned by uid "
                f"{self._uid}; remove it")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)

    def _check_traversable(self, path: Path) -> None:
        """Every parent of `path` must let the server user through."""
        pw = self._run_as
        assert pw is not None
        groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
        for parent in path.parents:
            st = parent.stat()
            mode = st.st_mode
            if st.st_uid == pw.pw_uid:
                ok = mode & stat.S_IXUSR
            elif st.st_gid in groups:
                ok = mode & stat.S_IXGRP
            else:
                ok = mode & stat.S_IXOTH
            if not ok:
                raise EmbeddedPostgresError(
                    f"the '{pw.pw_name}' user that runs the embedded server cannot reach "
                    f"{path}: {parent} is mode {stat.S_IMODE(mode):04o}; make it "
                    f"traversable (chmod o+x) or choose another state directory")

    async def _initdb(self) -> None:
        staging = self.root / "data.init"
        if staging.exists():  # an initdb that died half-way
            shutil.rmtree(staging)
        args = [str(self.bindir / "initdb"), "-D", str(staging), "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--locale=C"]
        if not self.durable:
            args.append("--no-sync")
        rc, out = await self._run(*args)
        if rc != 0:
            raise EmbeddedPostgresError(f"initdb failed ({rc}): {out}")
        os.rename(staging, self.data_dir)

    def postmaster_alive(self) -> bool:
        """The pid in postmaster.pid is a live postgres process (a /proc look-up,
        cheap enough to poll; `is_running` asks pg_ctl)."""
        return self._pid_is_postgres(self.pid)

    async def is_running(self) -> bool:
        """True if a live server (ours or another process's) owns the data dir."""
        self._resolve_user()
        return await self._running()

    async def _running(self) -> bool:
        """True if a live server owns the data dir (pg_ctl status)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        rc, _ = await self._run(str(self.bindir / "pg_ctl"), "status", "-D", str(self.data_dir))
        return rc == 0 and self._pid_is_postgres(self.pid)

    @staticmethod
    def _pid_is_postgres(pid: int | None) -> bool:
        if not pid:
            return False
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError as e:
            # ESRCH/ENOENT: gone. EACCES: someone else's process, not our server
            # (ours runs as a user we can inspect: ourselves, or postgres as root).
            return e.errno not in (errno.ENOENT, errno.ESRCH, errno.EACCES)
        return os.path.basename(exe).startswith("postgres")

    def _remove_foreign_pidfile(self) -> None:
        # After a SIGKILL (or a reboot) the pid in postmaster.pid may belong to an
        # unrelated live process; postgres would then refuse to start ("lock file
        # already exists"). A dead pid is fine: postgres removes that file itself.
        pid = self.pid
        if pid and not self._pid_is_postgres(pid):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _server_options(self) -> str:
        opts = [
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "unix_socket_permissions=0700",
            "-c", f"port={PORT}",
        ]
        if not self.durable:
            # Safe against a killed server (the OS still has the WAL), not against
            # a machine crash. synchronous_commit stays on: turning it off would
            # lose the last commits even when only the server is killed.
            opts += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        # pg_ctl hands -o to /bin/sh.
        return " ".join(shlex.quote(o) for o in opts)

    async def _pg_ctl_start(self) -> None:
        # Backends of a SIGKILLed postmaster may still hold its shared memory
        # ("pre-existing shared memory block is still in use") for a moment:
        # try again, and before each new try see whether a server came up.
        first = True
        try:
            async for attempt in retrying(what="pg_ctl start", attempts=_START_ATTEMPTS, retry_on=_StartFailed,
                                          first=0.1, cap=1.0, jitter=False, level="info",
                                          data_dir=str(self.data_dir)):
                with attempt:
                    if not first:
                        if await self._running():
                            return
                        self._remove_foreign_pidfile()
                    first = False
                    rc, out = await self._run(
                        str(self.bindir / "pg_ctl"), "start", "-D", str(self.data_dir), "-w",
                        "-t", str(int(self.start_timeout)), "-l", str(self.log_file),
                        "-o", self._server_options())
                    if rc != 0:
                        raise _StartFailed(out.strip())
        except _StartFailed as e:
            if await self._running():
                return
            raise EmbeddedPostgresError(f"pg_ctl start failed: {e}; log tail: {self._log_tail()}") from None

    def _log_tail(self, lines: int = 10) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.dsn_for("postgres"))
        try:
            exists = await conn.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                try:
                    await conn.execute(f'CREATE DATABASE "{DATABASE}"')
                except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                    pass  # another process created it at the same moment
        finally:
            await conn.close()

    async def _run(self, *args: str) -> tuple[int, str]:
        kwargs: dict = {}
        env = server_env()
        if self._run_as is not None:
            kwargs = dict(user=self._uid, group=self._gid, extra_groups=[])
            env["HOME"] = self._run_as.pw_dir
            env["USER"] = env["LOGNAME"] = self._run_as.pw_name
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=str(self.root), env=env, **kwargs)
        out, _ = await proc.communicate()
        return proc.returncode, out.decode(errors="replace")

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.state_dir)!r})"


# What initdb/pg_ctl (and so the server, which inherits it) may see of ovault's
# environment. Nothing else: ovault's own secrets (OVAULT_ENGINE_PASSWORD,
# OVAULT_MOVERS_TOKEN, OVAULT_SMTP_PASSWORD, a DSN, ...) and libpq's PG*
# variables would otherwise sit in every PostgreSQL backend's environment.
SERVER_ENV_KEEP = ("PATH", "TZ", "TMPDIR", "HOME", "USER", "LOGNAME")


def server_env(environ=None) -> dict:
    """The scrubbed environment the embedded server's tools run with."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in SERVER_ENV_KEEP if k in environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
    return env
