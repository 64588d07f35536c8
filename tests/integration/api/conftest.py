"""The orchestrator's real application (`service.create_app`: its middlewares and
every route) on aiohttp's test server, against the real catalog (a fresh
PostgreSQL database per test, tests/integration/conftest.py) and a real store on
a local directory. Only the engine, the SSO verifier, the job runner and the
live hub (just its progress tracker) are small fakes: these tests are about the HTTP edge (auth, validation, paging,
problem+json), not about what the engine does.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext.store import Store
from orchestrator import service
from orchestrator.api import files as files_api
from orchestrator.api.sso import SsoUser
from orchestrator.config import Config
from orchestrator.errors import NotFound
from orchestrator.keys import CATALOG, DSN, ENGINE, HUB, READY, RUNNER, SSO, STORE, TARGET_ID
from orchestrator.live import ProgressTracker
from sandbox.engine.roles import ROLE_IDS, role_permits


@dataclass
class FakeEngine:
    """The engine calls the API handlers make, over a fixed inventory."""
    vms: dict = field(default_factory=dict)  # id -> SimpleNamespace(id, name, status, host, cluster, memory)
    clusters: list = field(default_factory=list)
    storage_domains: list = field(default_factory=list)

    def add_vm(self, name: str, vm_id: str | None = None):
        vm_id = vm_id or str(uuid.uuid4())
        self.vms[vm_id] = SimpleNamespace(id=vm_id, name=name, status="up", host=None,
                                          cluster=SimpleNamespace(id="c1"), memory=1 << 30)
        return vm_id

    async def get_vm(self, vm_id: str, all_content: bool = False):
        try:
            return self.vms[vm_id]
        except KeyError:
            raise NotFound("VM", vm_id) from None

    async def list_vms(self, search: str | None = None):
        return list(self.vms.values())

    async def list_clusters(self):
        return self.clusters

    async def list_storage_domains(self):
        return self.storage_domains

    # engine permissions (api/authz.py): the engine's own roles and permits
    grants: dict = field(default_factory=dict)  # engine user id -> [(role name, kind, object id)]
    disks: dict = field(default_factory=dict)  # vm id -> [SimpleNamespace(id, alias, name, storage_domains)]

    def grant(self, user_id: str, role: str, kind: str = "system", oid: str | None = None):
        self.grants.setdefault(user_id, []).append((role, kind, oid))

    async def user_permissions(self, user_id: str):
        return [(ROLE_IDS[r], k, i) for r, k, i in self.grants.get(user_id, [])]

    async def role_permits(self, role_id: str):
        return frozenset(role_permits({v: k for k, v in ROLE_IDS.items()}[role_id]))

    async def vm_disks(self, vm_id: str):
        return [(None, d) for d in self.disks.get(vm_id, [])]

    async def get_disk(self, disk_id: str):
        for ds in self.disks.values():
            for d in ds:
                if d.id == disk_id:
                    return d
        raise NotFound("disk", disk_id)


class FakeSso:
    """SSO tokens the engine would accept: token -> SsoUser."""

    def __init__(self):
        self.users: dict[str, SsoUser] = {}
        self.asked: list[tuple[str, float | None]] = []  # every verify call: (token, max_age)

    async def verify(self, token: str, *, max_age: float | None = None):
        self.asked.append((token, max_age))
        return self.users.get(token)

    async def close(self):
        pass


class FakeRunner:
    def __init__(self):
        self.pokes = 0

    def poke(self):
        self.pokes += 1


@dataclass
class Api:
    client: TestClient
    app: web.Application
    admin: str  # an admin API token
    engine: FakeEngine
    sso: FakeSso
    runner: FakeRunner
    tracker: ProgressTracker  # the live hub's: progress samples heard by this replica

    @property
    def catalog(self):
        return self.app[CATALOG]

    async def token(self, role: str) -> str:
        _, plain = await self.catalog.tokens.create(f"test-{role}-{uuid.uuid4().hex[:6]}", role)
        return plain

    async def call(self, method: str, path: str, token: str | None = ..., **kw):
        """(status, content type, JSON body); token=None sends no Authorization."""
        headers = dict(kw.pop("headers", {}))
        token = self.admin if token is ... else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.client.request(method, path, headers=headers, **kw) as r:
            body = await r.json(content_type=None) if r.status != 204 else None
            return r.status, r.content_type, body


@pytest.fixture
async def api(catalog, dsn, tmp_path):
    cfg = Config(state_dir=str(tmp_path / "state"))
    cfg.target.url = str(tmp_path / "target")
    (tmp_path / "target").mkdir()
    engine, sso, runner, tracker = FakeEngine(), FakeSso(), FakeRunner(), ProgressTracker()

    async def resources(app: web.Application):
        app[CATALOG] = catalog
        app[DSN] = dsn
        app[ENGINE] = engine
        app[SSO] = sso
        app[RUNNER] = runner
        app[HUB] = SimpleNamespace(tracker=tracker)  # the websocket is tested with the sandbox
        store = await Store.open(cfg.target.url, create=True, chunk_size=64 * 1024)
        app[STORE] = store
        app[TARGET_ID] = (await catalog.targets.create(cfg.target.name, cfg.target.url, {})).id
        app[READY]["started"] = True
        yield
        await store.close()

    app = service.create_app(cfg)
    # The real middlewares and routes; the resources above instead of the service's.
    del app.cleanup_ctx[:]
    app.cleanup_ctx.extend([resources, files_api.files_ctx])  # file restore: sessions open on first use
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        _, admin = await catalog.tokens.create("test-admin", "admin")
        yield Api(client, app, admin, engine, sso, runner, tracker)
    finally:
        await client.close()
