"""The orchestrator's client of a host's ovault-mover (MoverPort._remote in
orchestrator/jobs/adapters.py) against a scripted mover (aioresponses): the
copy request, progress polling, the result, failures and cancellation. The
real mover is exercised by tests/e2e/test_mover.py."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.unit.http.mock_http import aioresponses
from yarl import URL

from orchestrator.jobs.adapters import MoverPort

MOVER = "https://host1.test:54323"
MOVER2 = "https://host2.test:54323"
COPIES = MOVER + "/v1/copies"
CID = "3f0c6a4e-0000-4000-8000-000000000001"


@pytest.fixture
async def port():
    session = aiohttp.ClientSession()
    p = MoverPort(store=None, store_url="nfs://nas/export", movers={"host-1": MOVER, "host-2": MOVER2},
                  token="shared-token", tokens={"host-1": "mover-token", "host-2": "host2-token"},
                  ca_file=None, requests=4, session=session, imageio_ca="/etc/pki/ca.pem")
    yield p
    await session.close()


def _backup(port, progress):
    return port.backup_disk(host_id="host-1", transfer_url="https://host1.test:54322/images/t1", vm_id="vm-1",
                            backup_id="b-1", disk_id="d-1", parent_backup_id=None, incremental=False,
                            size=1 << 30, copy_id=CID, progress=progress)


async def test_a_copy_is_requested_polled_and_its_result_returned(port):
    seen = []

    async def progress(done, total):
        seen.append((done, total))
    with aioresponses() as m:
        m.post(COPIES, status=202, payload={"id": CID, "state": "running"})
        m.get(f"{COPIES}/{CID}", payload={"state": "running", "bytes_done": 1 << 29, "bytes_total": 1 << 30})
        m.get(f"{COPIES}/{CID}", payload={"state": "succeeded", "bytes_done": 1 << 30, "bytes_total": 1 << 30,
                                          "result": {"sha256": "ab" * 32, "size": 1 << 30}})
        result = await _backup(port, progress)
        (post,) = m.requests[("POST", URL(COPIES))]
        gets = m.requests[("GET", URL(f"{COPIES}/{CID}"))]
    assert result == {"sha256": "ab" * 32, "size": 1 << 30}
    assert seen == [(1 << 29, 1 << 30), (1 << 30, 1 << 30)]
    assert post.kwargs["json"] == {"op": "backup", "transfer_url": "https://host1.test:54322/images/t1",
                                   "store": "nfs://nas/export", "vm_id": "vm-1", "backup_id": "b-1",
                                   "disk_id": "d-1", "size": 1 << 30, "incremental": False,
                                   "id": CID}  # no None fields, and no CA: the mover has its own
    # host-1's own token, not another host's nor the shared one
    assert all(c.kwargs["headers"]["Authorization"] == "Bearer mover-token" for c in [post, *gets])


async def test_each_host_gets_its_own_token(port):
    async def progress(done, total):
        pass
    with aioresponses() as m:
        m.post(MOVER2 + "/v1/copies", status=202, payload={"id": CID, "state": "running"})
        m.get(f"{MOVER2}/v1/copies/{CID}", payload={"state": "succeeded", "result": {"size": 1}})
        await port.restore_disk(host_id="host-2", transfer_url="https://host2.test:54322/images/t2", vm_id="vm-1",
                                backup_id="b-1", disk_id="d-1", size=1 << 30, copy_id=CID, progress=progress,
                                index_sha256="cd" * 32)
        (post,) = m.requests[("POST", URL(MOVER2 + "/v1/copies"))]
    assert post.kwargs["headers"]["Authorization"] == "Bearer host2-token"
    assert post.kwargs["json"]["index_sha256"] == "cd" * 32 and "ca_file" not in post.kwargs["json"]


async def test_a_refused_copy_and_a_failed_copy_raise_with_the_movers_words(port):
    async def progress(done, total):
        pass
    with aioresponses() as m:
        m.post(COPIES, status=403, payload={"detail": "store not allowed"})
        with pytest.raises(Exception, match="store not allowed"):
            await _backup(port, progress)
        m.post(COPIES, status=202, payload={"id": CID})
        m.get(f"{COPIES}/{CID}", payload={"state": "failed", "bytes_done": 0,
                                          "error": {"code": "target_full", "message": "no space left on the target"}})
        with pytest.raises(Exception, match="no space left on the target"):
            await _backup(port, progress)


async def test_an_unreachable_mover_is_a_mover_error(port):
    async def progress(done, total):
        pass
    with aioresponses() as m:
        m.post(COPIES, exception=aiohttp.ClientConnectionError("connection refused"))
        with pytest.raises(Exception, match=f"mover {MOVER} unreachable: connection refused") as ei:
            await _backup(port, progress)
    assert type(ei.value).__name__ == "MoverError"


async def test_cancelling_the_job_cancels_the_copy_on_the_mover(port):
    polled = asyncio.Event()

    async def progress(done, total):
        polled.set()
    with aioresponses() as m:
        m.post(COPIES, status=202, payload={"id": CID})
        m.get(f"{COPIES}/{CID}", payload={"state": "running", "bytes_done": 1, "bytes_total": 2}, repeat=True)
        m.delete(f"{COPIES}/{CID}", status=202, payload={"id": CID, "state": "canceling"})
        task = asyncio.create_task(_backup(port, progress))
        await asyncio.wait_for(polled.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (delete,) = m.requests[("DELETE", URL(f"{COPIES}/{CID}"))]
    assert delete.kwargs["headers"]["Authorization"] == "Bearer mover-token"
