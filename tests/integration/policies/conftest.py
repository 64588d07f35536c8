"""The real application (service.create_app) on aiohttp's test server over a real
catalog and a real local store; the engine is a small fake with tags and clusters."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext.store import Store
from orchestrator import service
from orchestrator.config import Config
from orchestrator.errors import NotFound
from orchestrator.keys import CATALOG, DSN, ENGINE, READY, RUNNER, STORE, TARGET_ID


@dataclass
class TagEngine:
    vms: dict = field(default_factory=dict)

    def add_vm(self, name, *, tags=(), cluster="c1", vm_id=None):
        vm_id = vm_id or str(uuid.uuid4())
        self.vms[vm_id] = SimpleNamespace(
            id=vm_id, name=name, status="up", host=None, memory=1 << 30,
            cluster=SimpleNamespace(id=cluster),
            tags=[SimpleNamespace(name=t) for t in tags])
        return vm_id

    async def get_vm(self, vm_id, all_content=False):
        try:
            return self.vms[vm_id]
        except KeyError:
            raise NotFound("VM", vm_id) from None

    async def list_vms(self, search=None):
        return list(self.vms.values())

    async def list_vms_with_tags(self, search=None):
        return list(self.vms.values())


class Pokes:
    def __init__(self):
        self.n = 0

    def poke(self):
        self.n += 1


@dataclass
class Api:
    client: TestClient
    app: web.Application
    admin: str
    engine: TagEngine
    store: Store

    @property
    def catalog(self):
        return self.app[CATALOG]

    async def token(self, role):
        _, plain = await self.catalog.tokens.create(f"t-{role}-{uuid.uuid4().hex[:6]}", role)
        return plain

    async def call(self, method, path, token=..., **kw):
        token = self.admin if token is ... else token
        headers = {"Authorization": f"Bearer {token}"}
        async with self.client.request(method, path, headers=headers, **kw) as r:
            body = await r.json(content_type=None) if r.status != 204 else None
            return r.status, body


@pytest.fixture
async def papi(catalog, dsn, tmp_path):
    cfg = Config(state_dir=str(tmp_path / "state"))
    cfg.target.url = str(tmp_path / "target")
    (tmp_path / "target").mkdir()
    engine = TagEngine()
    holder = {}

    async def resources(app):
        app[CATALOG] = catalog
        app[DSN] = dsn
        app[ENGINE] = engine
        app[RUNNER] = Pokes()
        store = await Store.open(cfg.target.url, create=True, chunk_size=64 * 1024)
        app[STORE] = store
        holder["store"] = store
        app[TARGET_ID] = (await catalog.targets.create(cfg.target.name, cfg.target.url, {})).id
        app[READY]["started"] = True
        yield
        await store.close()

    app = service.create_app(cfg)
    del app.cleanup_ctx[:]
    app.cleanup_ctx.append(resources)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        _, admin = await catalog.tokens.create("test-admin", "admin")
        yield Api(client, app, admin, engine, holder["store"])
    finally:
        await client.close()
