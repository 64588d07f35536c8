"""Clients for a running guest's two control sockets: QMP (the qemu monitor)
and QGA (the qemu guest agent inside the guest).

Both speak JSON lines over a unix socket. `Qmp` keeps one connection, runs
one command at a time and collects the asynchronous events qemu sends
(`BLOCK_JOB_*`, `BLOCK_EXPORT_DELETED`, ...) so a caller can wait for one.
`Agent` connects per call: the agent's chardev takes one client at a time
and other users (file writes into the guest) need it too; an agent that does
not answer within the timeout is `AgentUnavailable` (no agent in the guest,
or the guest is not up yet) — how the engine decides to go crash-consistent.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["Qmp", "QmpError", "Agent", "AgentUnavailable"]


class QmpError(Exception):
    """qemu refused a command: `klass` is qemu's error class."""

    def __init__(self, command: str, klass: str, desc: str):
        super().__init__(f"{command}: {desc} ({klass})")
        self.command, self.klass, self.desc = command, klass, desc


class Qmp:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        self.events: list[dict] = []
        self._event_seen = asyncio.Event()
        self.greeting: dict | None = None

    # --- connection --------------------------------------------------------------
    async def connect(self, timeout: float = 10.0) -> "Qmp":
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    self.path, limit=1 << 24)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        line = await asyncio.wait_for(self._reader.readline(), timeout)
        self.greeting = json.loads(line)
        if "QMP" not in self.greeting:
            raise ConnectionError(f"{self.path} is not a QMP socket")
        self._task = asyncio.create_task(self._read_loop())
        await self.execute("qmp_capabilities")
        return self

    async def close(self):
        if self._writer:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._writer = self._reader = self._task = None

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    async def _read_loop(self):
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "event" in msg:
                    self.events.append(msg)
                    self._event_seen.set()
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut and not fut.done():
                    fut.set_result(msg)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"QMP connection {self.path} closed"))
            self._pending.clear()

    # --- commands ----------------------------------------------------------------
    async def execute(self, command: str, arguments: dict | None = None, *,
                      timeout: float = 60.0) -> Any:
        if self._writer is None:
            raise ConnectionError("QMP is not connected")
        async with self._lock:
            rid = next(self._ids)
            fut = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            msg = {"execute": command, "id": rid}
            if arguments:
                msg["arguments"] = arguments
            self._writer.write(json.dumps(msg).encode() + b"\n")
            await self._writer.drain()
            reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise QmpError(command, reply["error"].get("class", "GenericError"),
                           reply["error"].get("desc", ""))
        return reply.get("return")

    async def transaction(self, actions: list[tuple[str, dict]]):
        """Run actions atomically (qemu's `transaction`): all or none."""
        return await self.execute("transaction", {"actions": [
            {"type": t, "data": d} for t, d in actions]})

    async def hmp(self, command_line: str) -> str:
        """A human monitor command (e.g. `qemu-io <node> "write ..."`); qemu's
        text answer, which carries errors as text too."""
        return await self.execute("human-monitor-command", {"command-line": command_line})

    async def wait_event(self, name: str, timeout: float = 30.0, **match) -> dict:
        """The first event `name` (since the connection) whose data has `match`;
        consumed, so waiting again finds the next one."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                data = ev.get("data") or {}
                if ev["event"] == name and all(data.get(k) == v for k, v in match.items()):
                    del self.events[i]
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no QMP event {name} {match or ''} within {timeout}s")
            self._event_seen.clear()
            try:
                await asyncio.wait_for(self._event_seen.wait(), left)
            except asyncio.TimeoutError:
                pass

    # --- block node helpers ------------------------------------------------------
    async def named_nodes(self) -> dict[str, dict]:
        return {n["node-name"]: n for n in await self.execute("query-named-block-nodes", {"flat": True})}

    async def bitmaps(self, node: str) -> list[str]:
        """Names of the dirty bitmaps on `node` (its own, not its backing chain's)."""
        n = (await self.named_nodes()).get(node)
        if n is None:
            raise QmpError("query-named-block-nodes", "DeviceNotFound", f"no block node {node}")
        return [b["name"] for b in n.get("dirty-bitmaps") or [] if b.get("name")]


class AgentUnavailable(Exception):
    """The guest agent did not answer (none in the guest, or not running)."""


class Agent:
    """The qemu guest agent: one connection per call, synchronised with
    `guest-sync-delimited` so a stale answer from an earlier client is skipped."""

    def __init__(self, path: str | Path, timeout: float = 5.0):
        self.path, self.timeout = str(path), timeout

    async def execute(self, command: str, arguments: dict | None = None, *,
                      timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=1 << 24), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise AgentUnavailable(f"guest agent socket {self.path}: {e}") from None
        try:
            return await asyncio.wait_for(self._call(reader, writer, command, arguments), timeout)
        except asyncio.TimeoutError:
            raise AgentUnavailable(f"the guest agent did not answer {command} "
                                   f"within {timeout}s") from None
        except (ConnectionError, OSError) as e:
            raise AgentUnavailable(f"guest agent connection lost: {e}") from None
        finally:
            writer.close()

    async def _call(self, reader, writer, command, arguments):
        sync_id = int(time.monotonic() * 1000) & 0x7FFFFFFF
        writer.write(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                            "arguments": {"id": sync_id}}).encode() + b"\n")
        await writer.drain()
        while True:
            msg = await self._read(reader)
            if msg.get("return") == sync_id:
                break
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()
        reply = await self._read(reader)
        if "error" in reply:
            raise QmpError(command, reply["error"].get("class", "GenericError"),
                           reply["error"].get("desc", ""))
        return reply.get("return")

    @staticmethod
    async def _read(reader) -> dict:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("the guest agent closed the connection")
            line = line.lstrip(b"\xff").strip()
            if line:
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue

    async def ping(self) -> bool:
        try:
            await self.execute("guest-ping")
            return True
        except AgentUnavailable:
            return False
