"""ovault's one error family: stable codes, the wire round trip, problem+json by class."""
from __future__ import annotations

import errno
import json
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imageio_ext import errors as shared
from imageio_ext.copy import CorruptedBackup, ImageioUnavailable, InvalidRequest, backup_disk
from imageio_ext.store import Store
from imageio_ext.store import errors as store_errors
from orchestrator import catalog as cat
from orchestrator import errors
from orchestrator.api.problem import problem_middleware

from .mover.fakes import FakeImage


def test_one_family_shared_meanings_first():
    for e in (store_errors.BackupNotFound("v", "b"), cat.NotFound("job", "x"), errors.NotFound("VM", "y")):
        assert isinstance(e, errors.NotFound) and e.status == 404 and e.slug.endswith("not-found")
    assert isinstance(cat.Conflict("dup"), errors.Conflict) and isinstance(cat.Conflict("dup"), cat.CatalogError)
    assert isinstance(store_errors.TargetUnavailable("nfs://h/x", "down"), errors.TargetUnavailable)
    assert isinstance(store_errors.TargetUnavailable("nfs://h/x", "down"), store_errors.StoreError)
    assert isinstance(store_errors.ChunkCorrupted("ab", "bad"), CorruptedBackup)
    assert isinstance(InvalidRequest("x"), errors.Invalid) and InvalidRequest("x").status == 400
    # orchestrator.errors re-exports the shared classes themselves
    assert errors.OvaultError is shared.OvaultError and errors.NotFound is shared.NotFound


def test_codes_are_unique_per_meaning():
    owners = dict(shared._BY_CODE)
    assert owners["not_found"] is shared.NotFound
    assert owners["target_full"] is shared.TargetFull
    assert owners["chunk_missing"] is store_errors.ChunkMissing
    assert owners["imageio_unavailable"] is ImageioUnavailable
    # an error class that declares a code declares its own
    assert len(set(owners)) == len(owners)
    for code, cls in owners.items():
        assert cls.code == code and code == code.lower() and " " not in code


@pytest.mark.parametrize("err", [
    shared.TargetFull("nfs://h/x", "[Errno 28] No space left on device"),
    store_errors.ChunkMissing("ab" * 32, [0, 4 << 20]),
    ImageioUnavailable("unix:/run/s", "refused"),
    store_errors.BackupNotFound(str(uuid.uuid4()), str(uuid.uuid4())),
])
def test_wire_round_trip_keeps_class_and_words(err):
    got = errors.from_dict(json.loads(json.dumps(err.to_dict())), default=errors.MoverError)
    assert type(got) is shared._BY_CODE[err.code] and isinstance(err, type(got))
    assert str(got) == str(err) and got.code == err.code


def test_unknown_code_becomes_the_default_keeping_code_and_message():
    got = errors.from_dict({"code": "canceled", "message": "The copy was canceled"}, default=errors.MoverError)
    assert type(got) is errors.MoverError and got.code == "canceled" and str(got) == "The copy was canceled"
    got = errors.from_dict({"type": "urn:ovault:mover:invalid_request", "detail": "bad id"})
    assert isinstance(got, errors.Invalid) and str(got) == "bad id"


def test_enospc_is_target_full_naming_the_cause():
    e = shared.target_error(OSError(errno.ENOSPC, "No space left on device"), "nfs://h/x")
    assert isinstance(e, shared.TargetFull) and e.code == "target_full"
    assert str(e) == "Backup target nfs://h/x is full: [Errno 28] No space left on device"
    e = shared.target_error(OSError(errno.ENOSPC, "pwrite /x/.chunks/ab: write failed"), "nfs://h/x")
    assert "No space left on device" in str(e) and "pwrite" in str(e)
    assert isinstance(shared.target_error(OSError(errno.EROFS, "ro"), "u"), shared.TargetPermissionDenied)
    assert shared.target_error(OSError(errno.EIO, "io"), "u") is None


async def test_a_full_local_target_fails_the_copy_as_target_full(tmp_path, monkeypatch):
    (tmp_path / "t").mkdir()
    store = await Store.open(tmp_path / "t", create=True, chunk_size=256 << 10)
    img = FakeImage(1 << 20)
    img.guest_write(0, b"x" * (512 << 10))
    real_write = __import__("os").write

    def full(fd, data):
        if len(data) > 4096:  # chunk writes; small files (manifests) still fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("os.write", full)
    try:
        with pytest.raises(shared.TargetFull, match="No space left on device") as ei:
            await backup_disk(store, img, vm_id=str(uuid.uuid4()), backup_id=str(uuid.uuid4()),
                              disk_id=str(uuid.uuid4()), size=1 << 20)
        assert ei.value.to_dict()["code"] == "target_full"
        assert isinstance(ei.value.free, int) and f"({ei.value.free} bytes free)" in str(ei.value)
    finally:
        monkeypatch.undo()
        await store.close()


@pytest.fixture
async def api():
    async def boom(request):
        raise {
            "store": store_errors.BackupNotFound("vm1", "b1"),
            "catalog": cat.NotFound("job", "j1"),
            "conflict": cat.Conflict("duplicate key"),
            "retry": cat.Unavailable("connection refused"),
            "sql": cat.CatalogError("syntax error at or near SELECT secret_column"),
            "full": shared.TargetFull("nfs://h/x", "[Errno 28] No space left on device"),
            "bug": RuntimeError("password=hunter2"),
        }[request.match_info["what"]]

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/{what}", boom)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize("what,status,slug,detail", [
    ("store", 404, "backup-not-found", "Backup b1 of VM vm1 does not exist (no published manifest)"),
    ("catalog", 404, "not-found", "job j1 not found"),
    ("conflict", 409, "conflict", "Conflict: duplicate key"),
    ("retry", 503, "database-unavailable", "Database unavailable: connection refused"),
    ("full", 507, "target-full", "Backup target nfs://h/x is full: [Errno 28] No space left on device"),
])
async def test_domain_errors_become_problems_with_stable_types(api, what, status, slug, detail):
    r = await api.get(f"/{what}")
    assert r.status == status and r.content_type == "application/problem+json"
    doc = await r.json()
    assert doc["type"] == errors.PROBLEM_BASE + slug and doc["detail"] == detail
    assert doc["code"] == slug.replace("-", "_") and doc["status"] == status and doc["title"]


@pytest.mark.parametrize("what,secret", [("bug", "hunter2"), ("sql", "secret_column")])
async def test_unknown_and_internal_errors_are_500s_that_hide_internals(api, what, secret):
    r = await api.get(f"/{what}")
    assert r.status == 500
    text = await r.text()
    assert secret not in text and json.loads(text)["type"] == errors.PROBLEM_BASE + "internal"
