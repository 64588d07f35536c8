"""Child processes of the sandbox: run to completion, or supervise.

Every long-running child (qemu-nbd, ovirt-imageio, ganesha) is started in its
own process group so that a shutdown can kill the whole group, and is recorded
in a pid registry under the sandbox directory so that `ovault sandbox down`
can reap children of a detached sandbox.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path


class CommandFailed(RuntimeError):
    def __init__(self, argv, rc, stderr):
        self.argv, self.rc, self.stderr = list(map(str, argv)), rc, stderr
        super().__init__(
            f"command {' '.join(self.argv[:3])}... exited {rc}: {stderr.strip()[-800:]}")


async def run(*argv, check=True, input: bytes | None = None) -> str:
    """Run a command, return its stdout; raise CommandFailed on error."""
    p = await asyncio.create_subprocess_exec(
        *map(str, argv),
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate(input)
    if check and p.returncode != 0:
        raise CommandFailed(argv, p.returncode, err.decode(errors="replace"))
    return out.decode(errors="replace")


class Registry:
    """Pids of children, one file per child, so a detached sandbox can be reaped."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, pid: int):
        (self.path / f"{name}.pid").write_text(str(pid))

    def remove(self, name: str):
        try:
            (self.path / f"{name}.pid").unlink()
        except FileNotFoundError:
            pass

    def kill_all(self) -> int:
        n = 0
        for f in self.path.glob("*.pid"):
            try:
                pid = int(f.read_text())
                os.killpg(pid, signal.SIGTERM)
                n += 1
            except (ValueError, ProcessLookupError, PermissionError):
                pass
            f.unlink(missing_ok=True)
        return n


class Child:
    """A supervised long-running child process in its own process group."""

    def __init__(self, name: str, argv, *, registry: Registry | None = None,
                 log: Path | None = None, env=None):
        self.name, self.argv, self.registry, self.log, self.env = (
            name, [str(a) for a in argv], registry, log, env)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self):
        out = open(self.log, "ab") if self.log else asyncio.subprocess.DEVNULL
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT if self.log else asyncio.subprocess.DEVNULL,
                start_new_session=True, env=self.env)
        finally:
            if self.log:
                out.close()
        if self.registry:
            self.registry.add(self.name, self.proc.pid)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout=5.0):
        if self.proc is None:
            return
        if self.proc.returncode is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    await asyncio.wait_for(self.proc.wait(), wait)
                    break
                except asyncio.TimeoutError:
                    continue
        else:
            # The leader exited; make sure nothing of its group lingers.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.registry:
            self.registry.remove(self.name)

    async def kill(self):
        """Abrupt death (fault injection): SIGKILL, no clean-up by the child."""
        if self.running:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


async def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = predicate()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return r
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)
