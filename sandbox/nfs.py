"""A real NFS server (nfs-ganesha, VFS FSAL) exporting one local directory.

The sandbox's backup target and the store's integration tests use it::

    async with NfsServer(export_dir, state_dir) as srv:
        store = await Store.open(srv.url, create=True)

Facts that shaped it:

- NFS (2049) and the portmapper (111) have fixed ports, so only one server
  can run per machine. An exclusive ``flock`` on /run/ovault-nfs.lock is held
  while ours runs; a second one fails at once naming the holder's pid.
- NFSv3 needs rpcbind; it is started if absent (``rpcbind -w``) and left
  running, as other services may rely on it.
- The Debian package may have started its own ganesha (default config in
  /etc/ganesha); that one is stopped. A ganesha left behind by a crashed
  NfsServer (recognised by the marker in its config) is killed. Any other
  ganesha, or any other process on port 2049, is an error naming it.
- The export is bound to 127.0.0.1 only: it is ``No_Root_Squash`` and must
  never be reachable from the network.
- "Started" means the export answers through libnfs (``nfs-ls``), not merely
  that the process is alive.
- ``NFSV4 { Graceless = true; }`` so a restart serves at once instead of
  refusing state operations for the 90 s grace period.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import signal
import socket
from pathlib import Path

LOCK_PATH = Path("/run/ovault-nfs.lock")
MARKER = "# ovault-sandbox NfsServer"
_PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu/ganesha", "/usr/lib/aarch64-linux-gnu/ganesha", "/usr/lib64/ganesha")


class NfsServerError(RuntimeError):
    """The NFS server could not be started or stopped; the message says why."""


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is as good as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def _run(*cmd: str, timeout: float = 10.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{cmd[0]} timed out after {timeout}s"
    return proc.returncode, out.decode(errors="replace")


async def _pgrep(name: str) -> list[int]:
    rc, out = await _run("pgrep", "-x", name)
    return [int(p) for p in out.split()] if rc == 0 else []


async def _kill_and_wait(pid: int, timeout: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(int(timeout * 10)):
            if not _pid_alive(pid):
                return
            await asyncio.sleep(0.1)
    raise NfsServerError(f"ganesha.nfsd pid {pid} did not exit after SIGKILL")


class NfsServer:
    """nfs-ganesha exporting ``export_dir`` over NFSv3 and v4 on 127.0.0.1."""

    def __init__(
        self,
        export_dir: Path,
        state_dir: Path,
        *,
        lock_path: Path = LOCK_PATH,
        start_timeout: float = 30.0,
    ):
        self.export_dir = Path(export_dir).absolute()
        self.state_dir = Path(state_dir).absolute()
        self.lock_path = Path(lock_path)
        self.start_timeout = start_timeout
        for p in (self.export_dir, self.state_dir):
            if any(c in str(p) for c in '"\n\\;{}#'):
                raise NfsServerError(f"path {str(p)!r} has characters ganesha.conf cannot carry")
        self.conf_path = self.state_dir / "ganesha.conf"
        self.log_path = self.state_dir / "ganesha.log"
        self.pid_path = self.state_dir / "ganesha.pid"
        self._proc: asyncio.subprocess.Process | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"nfs://127.0.0.1{self.export_dir}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def __aenter__(self) -> "NfsServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- public --------------------------------------------------------------

    async def start(self, *, lock_timeout: float = 0.0) -> None:
        """Start serving; with ``lock_timeout`` > 0, wait that long for another
        ovault NFS server on this machine to go away instead of failing at once."""
        if self.running:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lock_timeout
        while True:
            try:
                self._acquire_lock()
                break
            except NfsServerError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.5)
        try:
            await self._clear_foreign()
            await self._ensure_rpcbind()
            self._write_conf()
            await self._spawn()
        except BaseException:
            await self._terminate()
            self._release_lock()
            raise

    async def stop(self, *, keep_lock: bool = False) -> None:
        """Terminate the daemon and wait for it. ``keep_lock=True`` keeps the
        machine-wide lock so a later ``start()`` cannot lose the ports to
        another server (fault injection: "the NFS server is down")."""
        await self._terminate()
        if not keep_lock:
            self._release_lock()

    async def restart(self) -> None:
        """Stop and start the daemon, keeping the lock (the export is unchanged)."""
        if self._lock_fd is None:
            await self.start()
            return
        await self._terminate()
        try:
            await self._spawn()
        except BaseException:
            await self._terminate()
            self._release_lock()
            raise

    # -- lock ------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise NfsServerError(
                    f"another NFS server of ovault is running (lock {self.lock_path} held by pid {holder}); "
                    "ports 2049/111 allow only one per machine"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)  # no stale pid for the next reader
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- other servers ---------------------------------------------------------

    async def _clear_foreign(self) -> None:
        for pid in await _pgrep("ganesha.nfsd"):
            args = _cmdline(pid)
            conf = None
            if "-f" in args and args.index("-f") + 1 < len(args):
                conf = args[args.index("-f") + 1]
            if conf is not None and self._is_ours(conf):
                # Left behind by an NfsServer that died; we hold the lock, so
                # its owner is gone.
                await _kill_and_wait(pid)
            elif conf is None or conf == "/etc/ganesha/ganesha.conf":
                # The Debian service's own daemon, started by the package.
                if Path("/run/systemd/system").is_dir():
                    await _run("systemctl", "stop", "nfs-ganesha", timeout=30)
                if _pid_alive(pid):
                    await _kill_and_wait(pid)
            else:
                raise NfsServerError(
                    f"a foreign ganesha.nfsd (pid {pid}: {' '.join(args)}) holds the NFS ports; stop it first"
                )
        if _port_open(2049):
            rc, out = await _run("ss", "-Hltnp", "sport = :2049")
            raise NfsServerError(f"port 2049 is already in use by another server: {out.strip() or 'unknown'}")

    @staticmethod
    def _is_ours(conf: str) -> bool:
        try:
            with open(conf) as f:
                return f.readline().startswith(MARKER)
        except OSError:
            return False

    async def _ensure_rpcbind(self) -> None:
        if not await _pgrep("rpcbind"):
            exe = shutil.which("rpcbind") or "/usr/sbin/rpcbind"
            rc, out = await _run(exe, "-w")
            if rc != 0:
                raise NfsServerError(f"rpcbind -w failed ({rc}): {out.strip()}")
        for _ in range(50):
            if _port_open(111):
                return
            await asyncio.sleep(0.1)
        raise NfsServerError("rpcbind is running but does not answer on port 111")

    # -- ganesha ---------------------------------------------------------------

    def _plugins_dir(self) -> str:
        for d in _PLUGIN_DIRS:
            if Path(d, "libfsalvfs.so").exists():
                return d
        raise NfsServerError("nfs-ganesha's VFS FSAL (libfsalvfs.so) is not installed: apt-get install nfs-ganesha-vfs")

    def _write_conf(self) -> None:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "recovery").mkdir(exist_ok=True)
        e = self.export_dir
        self.conf_path.write_text(
            f"""{MARKER} (generated; edits are lost on the next start)
NFS_CORE_PARAM {{
    Protocols = 3, 4;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Plugins_Dir = "{self._plugins_dir()}";
}}
NFSV4 {{
    Graceless = true;
    RecoveryRoot = "{self.state_dir / 'recovery'}";
}}
EXPORT {{
    Export_Id = 1;
    Path = "{e}";
    Pseudo = "{e}";
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""
        )

    async def _spawn(self) -> None:
        exe = shutil.which("ganesha.nfsd") or "/usr/bin/ganesha.nfsd"
        if not os.path.exists(exe):
            raise NfsServerError("ganesha.nfsd is not installed: apt-get install nfs-ganesha nfs-ganesha-vfs")
        self._proc = await asyncio.create_subprocess_exec(
            exe, "-F", "-f", str(self.conf_path), "-L", str(self.log_path), "-p", str(self.pid_path),
            "-N", "NIV_EVENT",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a ^C in the terminal goes to us; we stop it in order
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        last = ""
        while loop.time() < deadline:
            if self._proc is None or self._proc.returncode is not None:
                raise NfsServerError(f"ganesha.nfsd exited ({self._proc.returncode if self._proc else '?'}); "
                                     f"log {self.log_path}:\n{self._log_tail()}")
            rc, last = await _run("nfs-ls", self.url, timeout=5)
            if rc == 0:
                return
            await asyncio.sleep(0.1)
        raise NfsServerError(
            f"the export {self.url} did not answer within {self.start_timeout}s (last nfs-ls: {last.strip()}); "
            f"log {self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self, n: int = 10) -> str:
        """ganesha's own complaints (FATAL/CRIT/MAJ/WARN lines), then its last
        lines: the cause is often well before the connection noise at the end."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        worst = [ln for ln in lines if any(f" :{lvl} :" in ln for lvl in ("FATAL", "CRIT", "MAJ", "WARN"))]
        tail = [ln for ln in lines[-n:] if ln not in worst[-n:]]
        out = (["problems ganesha logged:"] + worst[-n:] + ["last lines:"]) if worst else []
        return "\n".join(out + tail)

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
