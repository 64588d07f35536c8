"""The real application (`service.create_app`, its middlewares, routes and the
file-restore service) over the real catalog and a real store holding three
backups of one disk with ext4, XFS and LVM (tests/files_disks.py); the engine
and SSO are the API tier's fakes. libguestfs runs its appliance for real."""
from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext.store import Store
from orchestrator import service
from orchestrator.api import files as files_api
from orchestrator.config import Config
from orchestrator.catalog.models import BackupDisk
from orchestrator.keys import CATALOG, DSN, ENGINE, HUB, READY, RUNNER, SSO, STORE, TARGET_ID
from orchestrator.live import ProgressTracker
from tests import files_disks
from tests.integration.api.conftest import Api, FakeEngine, FakeRunner, FakeSso

CHUNK = 1 << 20


async def store_image(store, catalog, vm_id: str, disk_id: str, image, created: int):
    """Back up a raw image file: one published backup and its catalog row."""
    bid = uuid.uuid4()
    size = os.path.getsize(image)
    bw = await store.begin_backup(vm_id, str(bid))
    dw = await bw.add_disk(disk_id, size)
    zero = bytes(CHUNK)
    with open(image, "rb") as f:
        off = 0
        while off < size:
            try:  # skip the image's holes without reading them
                data_at = os.lseek(f.fileno(), off, os.SEEK_DATA)
            except OSError:
                data_at = size
            hole_end = min(size, data_at - data_at % CHUNK)
            if hole_end > off:
                await dw.write_zero(off, hole_end - off)
                off = hole_end
                continue
            f.seek(off)
            data = f.read(CHUNK)
            if data == zero[:len(data)]:
                await dw.write_zero(off, len(data))
            else:
                await dw.write(off, data)
            off += len(data)
    info = await dw.commit()
    await bw.publish({"note": "files test"})
    b = await catalog.backups.create(vm_id=vm_id, vm_name="files-vm", mode="full", method="cbt",
                                     backup_id=bid)
    await catalog.backups.put_disk(bid, BackupDisk(disk_id=disk_id, provisioned_size=size, format="raw",
                                                   alias="files-vm_Disk1", index_digest=info.index_sha256))
    await catalog.backups.complete(bid, size_bytes=size, new_bytes=1, consistency="crash")
    await catalog.db.execute("UPDATE backups SET created_at = to_timestamp($2) WHERE id = $1", bid, created)
    return bid


@pytest.fixture(scope="session")
def disk_images():
    return files_disks.build()


@pytest.fixture
async def files_app(catalog, dsn, tmp_path, disk_images):
    cfg = Config(state_dir=str(tmp_path / "state"))
    cfg.target.url = str(tmp_path / "target")
    cfg.files.per_user = 2
    cfg.files.cache_dir = str(tmp_path / "files")
    (tmp_path / "target").mkdir()
    engine, sso, runner = FakeEngine(), FakeSso(), FakeRunner()
    vm_id = engine.add_vm("files-vm")
    disk_id = str(uuid.uuid4())
    backups = []

    async def resources(app: web.Application):
        app[CATALOG] = catalog
        app[DSN] = dsn
        app[ENGINE] = engine
        app[SSO] = sso
        app[RUNNER] = runner
        app[HUB] = SimpleNamespace(tracker=ProgressTracker())
        store = await Store.open(cfg.target.url, create=True, chunk_size=CHUNK)
        app[STORE] = store
        app[TARGET_ID] = (await catalog.targets.create(cfg.target.name, cfg.target.url, {})).id
        for v in (1, 2, 3):
            backups.append(await store_image(store, catalog, vm_id, disk_id, disk_images[v],
                                             1_700_000_000 + 86400 * v))
        app[READY]["started"] = True
        yield
        await store.close()

    app = service.create_app(cfg)
    del app.cleanup_ctx[:]
    app.cleanup_ctx.extend([resources, files_api.files_ctx])
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        _, admin = await catalog.tokens.create("test-admin", "admin")
        yield SimpleNamespace(api=Api(client, app, admin, engine, sso, runner, ProgressTracker()),
                              vm_id=vm_id, disk_id=disk_id, backups=backups, cfg=cfg,
                              service=app[files_api.FILES])
    finally:
        await client.close()
