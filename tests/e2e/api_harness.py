"""The orchestrator in a thread of the test process, over the session sandbox.

It runs `create_app(config.load(sandbox=DIR))` on its own event loop and a
real TCP port (plain HTTP: TLS is `ovault serve`'s concern), so tests drive it
over HTTP and websockets like any client, and can still reach its catalog
(`run(coro)`) to arrange what the API does not offer.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

from aiohttp import web

from orchestrator import config
from orchestrator.keys import CATALOG, DSN
from orchestrator.service import create_app


def state_root() -> Path:
    # The embedded PostgreSQL runs as `postgres`: pytest's 0700 tmp dirs are out.
    d = Path(tempfile.mkdtemp(prefix="ovault-api-", dir="/var/tmp"))
    d.chmod(0o755)
    return d


class ApiServer:
    def __init__(self, sandbox_dir: Path, state_dir: Path, *, dsn: str | None = None, configure=None):
        cfg = config.load(sandbox=sandbox_dir, env={})
        cfg.state_dir = str(state_dir)
        cfg.listen.tls = "off"
        cfg.jobs.claim_interval = 0.3
        cfg.timeouts.poll = 0.3
        cfg.jobs.lease_seconds = 6
        # The daily gc and weekly verify would fire at start whenever the wall clock is
        # within a day of their time: off, so what a test sees does not depend on the
        # hour it runs (tests that exercise them set them).
        cfg.policies.gc_schedule = ""
        cfg.policies.verify_schedule = ""
        if dsn:
            cfg.database.dsn = dsn
        if configure:
            configure(cfg)
        Path(cfg.target.url).mkdir(parents=True, exist_ok=True) if cfg.target.url.startswith("/") else None
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.app = None
        self.url = None
        self._stop = None
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self, timeout=120) -> "ApiServer":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise AssertionError("orchestrator did not start")
        if self._error:
            raise self._error
        self.token = (Path(self.cfg.state_dir) / "admin.token").read_text().strip()
        return self

    def _main(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
            left = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in left:
                t.cancel()
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    async def _serve(self):
        self._stop = asyncio.Event()
        runner = None
        try:
            self.app = create_app(self.cfg)
            runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
        except BaseException as e:
            self._error = e
            self._ready.set()
            if runner:
                await runner.cleanup()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self):
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(90)

    def run(self, coro, timeout=60):
        """Run a coroutine on the server's loop (catalog access)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def catalog(self):
        return self.app[CATALOG]

    @property
    def dsn(self) -> str:
        return self.app[DSN]

    def call(self, method: str, path: str, body=None, token="admin", headers=None):
        """(status, JSON document or text) of one request."""
        h = {"Content-Type": "application/json", **(headers or {})}
        tok = self.token if token == "admin" else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.url + path, method=method, headers=h,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            with e:
                status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        if "json" in ctype and raw:
            return status, json.loads(raw)
        return status, raw.decode()

    def ok(self, method: str, path: str, body=None, expect=200, **kw):
        status, doc = self.call(method, path, body, **kw)
        assert status == expect, f"{method} {path}: {status} {doc}"
        return doc

    def token_for(self, role: str, **extra) -> str:
        return self.ok("POST", "/api/v1/tokens", {"name": f"test-{role}", "role": role, **extra},
                       expect=201)["token"]


def cleanup(d: Path):
    shutil.rmtree(d, ignore_errors=True)
