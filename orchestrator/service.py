"""The orchestrator service: `create_app(config)` and `serve(config)`.

Resources live in `app.cleanup_ctx` generators, in dependency order:
database (embedded PostgreSQL when no DSN is configured) → catalog →
engine client (+ SSO verifier) → store → live hub (LISTEN/NOTIFY) → webhook
delivery worker → movers → job runner. Each one is torn down in the reverse
order on shutdown.
"""
from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from imageio_ext.store import Store
from imageio_ext.version import version

from . import catalog as cat
from . import store_keys
from .api import (auth, backups, cors, files, health, inventory, jobs, observe, openapi, problem, targets,
                  tokens, vms,
                  webhooks, ws)
from .config import Config
from .engine.client import EngineClient
from .engine.events import EventPoller, Waker
from .jobs.adapters import MoverPort, StorePort
from .jobs.runner import JobRunner
from .api import policies, verify
from .api.sso import SsoVerifier
from .catalog.supervisor import PostgresSupervisor
from .keys import (CATALOG, CONFIG, DELIVERY, DSN, ENGINE, HUB, METRICS, POLICIES, READY, RUNNER,
                   SSO, STORE,
                   TARGET_ID, TARGETS)
from .live import Hub
from .metrics import Metrics
from .policies.targets import TargetStores
from .tls import tls_context
from .webhooks import DeliveryWorker

log = structlog.get_logger("ovault.service")


def state_path(cfg: Config, *parts) -> Path:
    p = Path(cfg.state_dir).joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


async def _database(app: web.Application):
    cfg: Config = app[CONFIG]
    pg = None
    dsn = cfg.database.dsn
    if not dsn:
        pg = cat.EmbeddedPostgres(state_path(cfg, "pg"))
        await pg.start()
        dsn = pg.dsn
    pool = await cat.connect(dsn, min_size=1, max_size=10)
    watch = None
    try:
        await cat.migrate(pool)
        app[CATALOG] = cat.Catalog(pool)
        app[DSN] = dsn
        if pg is not None:  # ours to keep running (catalog/supervisor.py)
            sup = PostgresSupervisor(pg, interval=cfg.database.supervise_interval,
                                     backoff_max=cfg.database.restart_backoff_max,
                                     on_restart=app[METRICS].catalog_restarts.inc)
            watch = asyncio.create_task(sup.run())
        yield
    finally:
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await pool.close()
        if pg is not None:
            await pg.stop()


async def _engine(app: web.Application):
    cfg: Config = app[CONFIG]
    app[ENGINE] = EngineClient(cfg.engine, observer=app[METRICS].engine_call)
    app[SSO] = SsoVerifier(cfg.engine.url, ca_file=cfg.engine.ca_file, insecure=cfg.engine.insecure,
                           cache_seconds=cfg.api.sso_cache_seconds)
    yield
    await app[SSO].close()
    await app[ENGINE].close()


async def _live(app: web.Application):
    hub = Hub(app[CATALOG], app[DSN], metrics=app[METRICS])
    app[HUB] = hub
    await hub.start()
    yield
    await hub.stop()
    await app[METRICS].close()


async def _webhooks(app: web.Application):
    cfg: Config = app[CONFIG]
    if not cfg.webhooks.enabled:
        yield
        return
    worker = DeliveryWorker(app[CATALOG], cfg.webhooks, metrics=app[METRICS])
    app[DELIVERY] = worker
    app[HUB].on_event_ids.append(lambda _id: worker.poke())
    await worker.start()
    yield
    await worker.stop()


async def open_store(cfg: Config, *, encrypt: bool | None = None) -> Store:
    """The configured target's store (with its key when encrypted): a new target
    is initialised with the configured chunk size and encryption, an existing
    store keeps its own (`store_keys.open_store`)."""
    return await store_keys.open_store(cfg, encrypt=encrypt)


async def _store(app: web.Application):
    cfg: Config = app[CONFIG]
    targets = app[CATALOG].targets
    try:
        t = await targets.get_by_name(cfg.target.name)
        if t.url != cfg.target.url:
            t = await targets.update(t.id, url=cfg.target.url)
    except cat.NotFound:
        try:
            t = await targets.create(cfg.target.name, cfg.target.url, {"encrypt": True} if cfg.target.encrypt else {})
        except cat.Conflict:
            t = await targets.get_by_name(cfg.target.name)
    # A new target's store is encrypted if the configuration or the target's
    # row (POST /api/v1/targets {"encrypt": true}) asks for it.
    store = await open_store(cfg, encrypt=cfg.target.encrypt or (t.options or {}).get("encrypt") is True)
    app[STORE] = store
    app[TARGET_ID] = t.id
    yield
    await store.close()


async def _runner(app: web.Application):
    cfg: Config = app[CONFIG]
    session = None
    if cfg.movers.hosts:
        ctx = ssl.create_default_context(cafile=cfg.movers.ca_file or None)
        if cfg.movers.client_cert:  # mutual TLS: the movers check the orchestrator's certificate
            ctx.load_cert_chain(cfg.movers.client_cert, cfg.movers.client_key or None)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                        timeout=aiohttp.ClientTimeout(total=60))
    def mover_for(store, url):
        return MoverPort(store=store, store_url=url,
                         movers=cfg.movers.hosts if cfg.movers.enabled else {},
                         token=cfg.movers.token, tokens=cfg.movers.tokens, ca_file=cfg.movers.ca_file,
                         requests=cfg.movers.requests_per_copy, session=session,
                         imageio_ca=cfg.engine.ca_file or None)
    mover = mover_for(app[STORE], cfg.target.url)
    waker = Waker()
    poller = asyncio.create_task(EventPoller(app[ENGINE], waker, cfg.engine.events_interval).run())
    runner = JobRunner(catalog=app[CATALOG], engine=app[ENGINE], mover=mover,
                       store=StorePort(app[STORE]), config=cfg, target_id=app[TARGET_ID],
                       on_event=app[HUB].runner_event, waker=waker,
                       on_release=app[METRICS].engine_releases.inc,
                       on_resume=lambda kind: app[METRICS].transfer_resumes.labels(kind=kind).inc())
    # a policy's own target: its runs write there (orchestrator/policies/targets.py)
    app[TARGETS] = TargetStores(app[CATALOG], main_id=app[TARGET_ID], main_store=app[STORE],
                                chunk_size=cfg.target.chunk_size_kib * 1024,
                                ports=lambda s, url: (StorePort(s), mover_for(s, url)),
                                open_target=lambda t: store_keys.open_target(
                                    cfg, t.name, t.url, encrypt=(t.options or {}).get("encrypt") is True))
    runner.target_ports = app[TARGETS].ports
    app[RUNNER] = runner
    task = asyncio.create_task(runner.run())
    await _bootstrap_token(app)
    app[READY]["started"] = True
    log.info("orchestrator ready", replica=cfg.replica, target=cfg.target.url)
    yield
    app[READY]["started"] = False
    poller.cancel()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    await runner.stop()
    await app[TARGETS].close()
    if session:
        await session.close()


async def _policies(app: web.Application):
    """The policy service and this replica's scheduler (orchestrator/policies/)."""
    from .jobs.verify import VerifyJobs
    from .policies.jobs import MaintenanceJobs
    from .policies.maintenance import Maintenance
    from .policies.notify import Mailer
    from .policies.scheduler import Scheduler
    from .policies.service import PolicyService
    cfg: Config = app[CONFIG]
    svc = PolicyService(app[CATALOG], app[ENGINE], store=app[STORE], poke=app[RUNNER].poke)
    svc.stores, svc.default_target_id = app[TARGETS], app[TARGET_ID]
    app[POLICIES] = svc
    MaintenanceJobs(app[CATALOG], svc).register(app[RUNNER])   # prune and gc jobs
    VerifyJobs(app[CATALOG], app[STORE], stores=app[TARGETS].all_in_use).register(app[RUNNER])  # jobs/verify.py
    mailer = Mailer(cfg.smtp)
    maint = Maintenance(app[CATALOG], svc, replica=cfg.replica, settings=cfg.policies,
                        mailer=mailer)
    sched = Scheduler(app[CATALOG], svc, replica=cfg.replica,
                      interval=cfg.policies.scheduler_interval, mailer=mailer,
                      base_url=cfg.smtp.base_url, maintenance=maint)
    task = asyncio.create_task(sched.run())
    from .api.authz import authorizer
    from .inventory import Inventory
    from .inventory.wiring import attach
    inv = Inventory(app[ENGINE], interval=cfg.engine.events_interval,
                    reconcile_seconds=cfg.policies.inventory_reconcile_seconds)
    attach(inv, service=svc, maintenance=maint, wake=sched.wakeup.set,
           forget=[app[SSO].forget, lambda: authorizer(app).forget()])
    inv_task = asyncio.create_task(inv.run())
    yield
    task.cancel()
    inv_task.cancel()
    await asyncio.gather(task, inv_task, return_exceptions=True)


async def _bootstrap_token(app: web.Application):
    """First start: an admin token for the local CLI, readable by root only."""
    cfg: Config = app[CONFIG]
    path = state_path(cfg, "admin.token")
    if path.exists():
        if await app[CATALOG].tokens.verify(path.read_text().strip()) is not None:
            return
    _, plain = await app[CATALOG].tokens.create("bootstrap-admin", "admin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plain + "\n")


def create_app(cfg: Config) -> web.Application:
    # Outermost first: metrics and logs see every answer; CORS headers go on
    # errors too (a browser cannot read a 401 without them); problem+json wraps
    # whatever auth and the handlers raise.
    app = web.Application(middlewares=[observe.observe_middleware, cors.cors_middleware,
                                       problem.problem_middleware, auth.auth_middleware],
                          client_max_size=1 << 20)
    app[CONFIG] = cfg
    app[READY] = {"started": False}
    app[METRICS] = Metrics(cfg.api.stats_cache_seconds)
    app[auth.LIMITER] = auth.FailureLimiter(cfg.api.auth_failures_burst, cfg.api.auth_failures_per_minute)
    app.cleanup_ctx.extend([_database, _engine, _store, _live, _webhooks, _runner, _policies,
                            files.files_ctx])
    for module in ROUTE_MODULES:
        app.add_routes(module.routes)
    return app


ROUTE_MODULES = (health, observe, openapi, tokens, vms, inventory, backups, jobs, ws, targets, webhooks,
                 policies, verify, files)


async def serve(cfg: Config, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or forever)."""
    from .logs import startup_banner
    startup_banner("ovault-orchestrator", version())
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ctx = tls_context(cfg)
    site = web.TCPSite(runner, cfg.listen.host, cfg.listen.port, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else cfg.listen.port
    scheme = "https" if ctx else "http"
    host = "127.0.0.1" if cfg.listen.host in ("0.0.0.0", "::") else cfg.listen.host
    client = {"url": f"{scheme}://{host}:{port}",
              "ca_file": str(state_path(cfg, "tls", "cert.pem")) if ctx and cfg.listen.tls == "auto"
              else cfg.listen.cert_file or None,
              "token_file": str(state_path(cfg, "admin.token"))}
    state_path(cfg, "client.json").write_text(json.dumps(client, indent=2))
    log.info("listening", url=client["url"])
    try:
        await (stop.wait() if stop else asyncio.Event().wait())
    finally:
        await runner.cleanup()
