"""The live hub: catalog events and progress, fanned out to websocket clients.

Sources, both crossing replicas through PostgreSQL:
- catalog events: `NOTIFY ovault_events, '<event id>'` (sent by
  `EventRepository.append` in the event's transaction). The notification is
  only a wake-up; the hub reads the rows with `list_after`. Ids are handed out
  before commit, so a smaller id can commit after a larger one: the hub keeps
  the ids it has seen above its low-water mark and re-reads from the mark,
  skipping a hole only after `GAP_SECONDS` (a rolled-back insert).
- progress: the job runner's `machine.progress` callback. It is not persisted
  (too many); the hub coalesces samples per machine and sends each with
  `pg_notify('ovault_live', <json>)` from a background task, so the runner
  never waits on the database or on clients. Every replica (this one too)
  turns the samples it hears into `progress` messages with rate and ETA.

Slow or dead clients never slow anything down: `broadcast` only does
`put_nowait` into each client's bounded queue. When a queue is full, a
`progress` message is dropped (the next one supersedes it); any other message
closes the client with code 4429 ("too slow"): it reconnects and resubscribes,
and the `job.snapshot`s it then gets bring it up to date. A client whose socket
does not take a message within `api.ws_send_timeout` is closed too (4408),
and aiohttp's heartbeat (ping every 20 s) closes dead connections.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict

import asyncpg
import structlog

from .. import catalog as cat
from . import messages
from .progress import ProgressTracker

log = structlog.get_logger("ovault.live")

LIVE_CHANNEL = "ovault_live"
GAP_SECONDS = 5.0
NOTIFY_LIMIT = 7900  # PostgreSQL's NOTIFY payload must stay under 8000 bytes
CLOSE_TOO_SLOW = 4429
CLOSE_SEND_TIMEOUT = 4408


class Client:
    """One websocket connection's subscription and bounded outgoing queue."""

    def __init__(self, principal, queue_size: int):
        self.principal = principal
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.jobs: set[str] | None = set()  # None: every job ("*")
        self.dropped = 0
        self.overflowed = asyncio.Event()

    def wants(self, job_id: str | None) -> bool:
        return self.jobs is None or (job_id is not None and job_id in self.jobs)

    def offer(self, text: str, droppable: bool) -> bool:
        """False when the message was dropped or the client must be closed."""
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            if droppable:
                self.dropped += 1
            else:
                self.overflowed.set()
            return False


class Hub:
    def __init__(self, catalog: cat.Catalog, dsn: str, *, metrics=None):
        self.catalog, self.dsn, self.metrics = catalog, dsn, metrics
        self.clients: set[Client] = set()
        self.tracker = ProgressTracker()
        self.on_event_ids: list = []  # callables(event_id) - e.g. the webhook worker's poke
        self._low = 0
        self._seen: set[int] = set()
        self._gap_since: float | None = None
        self._pending: dict[str, dict] = {}
        self._wake_events = asyncio.Event()
        self._wake_flush = asyncio.Event()
        self._job_vms: OrderedDict[str, frozenset] = OrderedDict()
        self._job_state: OrderedDict[str, str] = OrderedDict()
        self._tasks: list[asyncio.Task] = []
        self._conn: asyncpg.Connection | None = None
        self.listening = asyncio.Event()

    # --- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        self._low = await self.catalog.events.last_id()
        self._tasks = [asyncio.create_task(self._listen(), name="live-listen"),
                       asyncio.create_task(self._pump(), name="live-pump"),
                       asyncio.create_task(self._flush(), name="live-flush")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    # --- progress from this replica's runner ------------------------------------------
    async def runner_event(self, type_: str, payload: dict) -> None:
        """`JobRunner(on_event=...)`: never blocks, never raises."""
        if type_ != "machine.progress":
            return
        if self.metrics is not None:
            self.metrics.progress(payload)
        self._pending[str(payload.get("machine_id"))] = {**payload, "t": time.time()}
        self._wake_flush.set()

    async def _flush(self) -> None:
        while True:
            await self._wake_flush.wait()
            self._wake_flush.clear()
            batch, self._pending = self._pending, {}
            for p in batch.values():
                text = json.dumps(p, separators=(",", ":"), default=str)
                if len(text) > NOTIFY_LIMIT:
                    text = json.dumps({**p, "disks": {}}, separators=(",", ":"), default=str)
                try:
                    await self.catalog.db.execute("SELECT pg_notify($1, $2)", LIVE_CHANNEL, text)
                except Exception as e:  # progress is best effort; the next sample follows
                    log.debug("progress notify failed", error=str(e))

    # --- LISTEN -------------------------------------------------------------------------
    async def _listen(self) -> None:
        delay = 0.5
        while True:
            lost = asyncio.Event()
            try:
                self._conn = await asyncpg.connect(self.dsn)
                self._conn.add_termination_listener(lambda _c: lost.set())
                await self._conn.add_listener(cat.CHANNEL, self._on_event_notify)
                await self._conn.add_listener(LIVE_CHANNEL, self._on_live_notify)
                self.listening.set()
                delay = 0.5
                self._wake_events.set()  # catch up with what happened while we were away
                await lost.wait()
                log.warning("LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("LISTEN connection failed", error=str(e), retry_in=delay)
            self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)

    def _on_event_notify(self, _c, _pid, _ch, payload: str) -> None:
        self._wake_events.set()
        for cb in self.on_event_ids:
            try:
                cb(payload)
            except Exception:
                log.exception("event callback failed")

    def _on_live_notify(self, _c, _pid, _ch, payload: str) -> None:
        try:
            sample = json.loads(payload)
            msg = self.tracker.message(sample)
        except (ValueError, TypeError, AttributeError):
            return
        asyncio.get_running_loop().create_task(self.broadcast(msg, droppable=True))

    # --- events -------------------------------------------------------------------------
    async def _pump(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake_events.wait(), GAP_SECONDS if self._seen else None)
            except asyncio.TimeoutError:
                pass
            self._wake_events.clear()
            try:
                await self._read_events()
            except cat.CatalogError as e:
                log.warning("reading events failed", error=str(e))
                await asyncio.sleep(1)
                self._wake_events.set()

    async def _read_events(self) -> None:
        while True:
            batch = await self.catalog.events.list_after(self._low, limit=500)
            for e in batch:
                if e.id in self._seen:
                    continue
                self._seen.add(e.id)
                for msg in self._messages(e):
                    await self.broadcast(msg, droppable=False)
            self._advance()
            if len(batch) < 500:
                return

    def _advance(self) -> None:
        while self._low + 1 in self._seen:
            self._low += 1
            self._seen.discard(self._low)
        if not self._seen:
            self._gap_since = None
            return
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        elif now - self._gap_since > GAP_SECONDS:  # a rolled-back id: skip the hole
            self._low = min(self._seen) - 1
            self._gap_since = None
            self._advance()

    def _messages(self, e: cat.Event) -> list[dict]:
        msg = messages.from_event(e)
        out = []
        jid = msg.get("job_id")
        if msg["type"] == "machine.updated" and jid:
            # The catalog has no "job started" event: the first machine step says it.
            if self._job_state.get(jid) not in ("running", *cat.TERMINAL) and msg["state"] not in cat.TERMINAL:
                out.append({"type": "job.updated", "job_id": jid, "kind": msg["kind"], "state": "running",
                            "error": None, "cancel_requested": False, "event": "job.running",
                            "event_id": e.id, "time": msg["time"]})
                self._remember(self._job_state, jid, "running")
        elif msg["type"] == "job.updated" and jid and msg["state"]:
            self._remember(self._job_state, jid, msg["state"])
        out.append(msg)
        return out

    @staticmethod
    def _remember(d: OrderedDict, k, v, cap: int = 10_000) -> None:
        d[k] = v
        d.move_to_end(k)
        while len(d) > cap:
            d.popitem(last=False)

    # --- fan-out --------------------------------------------------------------------------
    async def broadcast(self, msg: dict, *, droppable: bool) -> None:
        if not self.clients:
            return
        jid = msg.get("job_id")
        text = json.dumps(msg, separators=(",", ":"), default=str)
        vm = messages.vm_of(msg)
        job_vms = None
        for c in list(self.clients):
            if not c.wants(jid):
                continue
            p = c.principal
            if p.vm_ids is not None:
                if vm is not None:
                    if not p.sees(vm):
                        continue
                else:
                    if job_vms is None:
                        job_vms = await self._vms_of_job(jid)
                    if not job_vms or not all(p.sees(x) for x in job_vms):
                        continue
            if not c.offer(text, droppable) and self.metrics is not None:
                self.metrics.ws_dropped()

    async def _vms_of_job(self, jid: str | None) -> frozenset:
        if not jid:
            return frozenset()
        vms = self._job_vms.get(jid)
        if vms is None:  # a job's VMs are fixed when it is created: cache them
            try:
                job = await self.catalog.jobs.get(uuid.UUID(jid))
                vms = frozenset(m.vm_id for m in job.machines)
            except (cat.CatalogError, ValueError):
                vms = frozenset()
            self._remember(self._job_vms, jid, vms)
        return vms

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
