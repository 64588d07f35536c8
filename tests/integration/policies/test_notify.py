"""Notifications and daily maintenance: a real SMTP server (aiosmtpd) receives the
failure mail and the summary; gc runs once per day across replicas and reports
bytes freed; protection changes are announced once."""
import asyncio
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller

from imageio_ext.store import Store
from orchestrator.policies.jobs import MaintenanceJobs
from orchestrator.policies.maintenance import Maintenance
from orchestrator.policies.notify import Mailer
from orchestrator.policies.scheduler import Scheduler
from orchestrator.policies.service import PolicyService
from orchestrator.policies.settings import Policies, Smtp

UTC = timezone.utc
T0 = datetime(2030, 3, 4, 10, 0, 30, tzinfo=UTC)


class Engine:
    def __init__(self, *names):
        self.vms = [SimpleNamespace(id=str(uuid.uuid4()), name=n, cluster=SimpleNamespace(id="c"),
                                    tags=[SimpleNamespace(name="gold")]) for n in names]

    async def list_vms_with_tags(self, search=None):
        return self.vms


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class Inbox:
    def __init__(self):
        self.mails = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    inbox = Inbox()
    c = Controller(inbox, hostname="127.0.0.1", port=port)
    c.start()
    try:
        yield Smtp(host="127.0.0.1", port=port, security="plain", from_address="ovault@lab"), inbox
    finally:
        c.stop()


async def test_failure_mail_reaches_a_real_smtp_server(catalog, smtp):
    cfg, inbox = smtp
    engine = Engine("db-7")
    clock = Clock(T0)
    p = await catalog.policies.create({
        "name": "gold", "schedule": "*/5 * * * *", "timezone": "UTC",
        "rules": {"tags": ["gold"]}, "notify": {"emails": ["ops@example.com"],
                                                "on": ["failure", "summary"]}},
        scheduled_through=T0)
    svc = PolicyService(catalog, engine, clock=clock)
    s = Scheduler(catalog, svc, replica="A", clock=clock, mailer=Mailer(cfg),
                  base_url="https://ovault.example:8443")
    clock.t = T0 + timedelta(minutes=5)
    [t] = await s.pass_once()
    job = await catalog.jobs.get(t.job_id)
    # the run fails in its snapshot step
    await catalog.db.execute(
        "UPDATE machines SET state = 'failed', error = 'engine refused the snapshot: disk locked',"
        " finished_at = now() WHERE job_id = $1", job.id)
    await catalog.db.execute(
        "UPDATE jobs SET state = 'failed', finished_at = now(), error = '1 of 1 VMs failed' "
        "WHERE id = $1", job.id)
    await s.pass_once()
    for _ in range(50):
        if inbox.mails:
            break
        await asyncio.sleep(0.05)
    [(rcpt, mail)] = inbox.mails
    assert rcpt == ["ops@example.com"] and mail["From"] == "ovault@lab"
    assert "policy gold: 1 VM(s) not backed up" in mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    assert "db-7" in body and "disk locked" in body
    assert f"https://ovault.example:8443/api/v1/jobs/{job.id}" in body
    ev = await catalog.db.fetch("SELECT payload FROM events WHERE type = 'policy.run.finished'")
    assert [e["payload"]["state"] for e in ev] == ["failed"]
    # a second pass (or another replica) does not mail again
    await s.pass_once()
    assert len(inbox.mails) == 1

    # the daily summary, once, to the policies that asked for it (the run counts as
    # within the last 24 hours of the test's clock)
    await catalog.db.execute("UPDATE jobs SET created_at = $1", T0 + timedelta(minutes=5))
    settings = Policies(gc_schedule="", summary_schedule="0 7 * * *")
    clock.t = datetime(2030, 3, 5, 7, 1, tzinfo=UTC)
    m1 = Maintenance(catalog, svc, replica="A", settings=settings, mailer=Mailer(cfg), clock=clock)
    m2 = Maintenance(catalog, svc, replica="B", settings=settings, mailer=Mailer(cfg), clock=clock)
    await asyncio.gather(m1.pass_once(), m2.pass_once())
    for _ in range(50):
        if len(inbox.mails) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(inbox.mails) == 2
    rcpt, summary = inbox.mails[1]
    assert rcpt == ["ops@example.com"] and "daily summary" in summary["Subject"]
    assert "gold: 1 failed" in summary.get_payload(decode=True).decode()
    # protection: the VM is at risk (its only run failed), announced once
    ev = await catalog.db.fetch("SELECT payload FROM events WHERE type = 'vm.protection_changed'")
    assert [(e["payload"]["vm_id"], e["payload"]["status"]) for e in ev] == \
        [(engine.vms[0].id, "at_risk")]
    assert p.id


async def test_delete_then_gc_frees_the_chunks_once_per_day_never_beside_a_backup(catalog, tmp_path):
    (tmp_path / "t").mkdir()
    store = await Store.open(str(tmp_path / "t"), create=True, chunk_size=64 * 1024)
    try:
        vm, bid = str(uuid.uuid4()), uuid.uuid4()
        # a published backup holding 256 KiB of data no other backup has
        bw = await store.begin_backup(vm, str(bid))
        dw = await bw.add_disk(str(uuid.uuid4()), 256 * 1024)
        await dw.write(0, os.urandom(256 * 1024))
        await dw.commit()
        await bw.publish({"note": "test"})
        b = await catalog.backups.create(vm_id=vm, vm_name="v", mode="full", method="cbt",
                                         backup_id=bid)
        await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")
        clock = Clock(datetime(2030, 3, 5, 3, 31, tzinfo=UTC))
        svc = PolicyService(catalog, Engine(), store=store, clock=clock)
        jobs = MaintenanceJobs(catalog, svc, poll=0.05, gc_grace_seconds=0)
        # delete: hidden at once; the prune job removes the manifest, then the row
        _, pj = await svc.delete_backup(bid, requested_by="op")
        assert [x.vm_id for x in await store.list_backups()] == [vm]
        await jobs.prune(pj)
        assert await store.list_backups() == []
        assert (await catalog.backups.get(bid)).status == "deleted"
        # the day's gc job: queued once across two replicas
        settings = Policies(gc_schedule="30 3 * * *", summary_schedule="")
        await asyncio.gather(*(Maintenance(catalog, svc, replica=r, settings=settings,
                                           clock=clock).pass_once() for r in "AB"))
        [gc] = await catalog.db.fetch("SELECT id FROM jobs WHERE kind = 'gc'")
        gc_job = await catalog.jobs.get(gc["id"])
        # a backup job is queued: gc waits for it
        from orchestrator.catalog import NewMachine
        backup_job = await catalog.jobs.create("backup", [NewMachine(vm_id="vm-x")])
        task = asyncio.create_task(jobs.gc(gc_job))
        await asyncio.sleep(0.3)
        assert not task.done() and (await catalog.jobs.get(gc_job.id)).state == "queued"
        await catalog.db.execute("UPDATE machines SET state = 'succeeded', finished_at = now()")
        await catalog.db.execute("UPDATE jobs SET state = 'succeeded', finished_at = now() "
                                 "WHERE id = $1", backup_job.id)
        await asyncio.wait_for(task, 30)
        done = await catalog.jobs.get(gc_job.id)
        assert done.state == "succeeded" and done.result["bytes_freed"] > 0
        # progress was written while it ran: the last write counts every directory
        prog = done.result["progress"]
        assert prog["total"] > 0 and prog["done"] == prog["total"]
        assert done.result["chunks_removed"] == 4
        ev = await catalog.db.fetch("SELECT payload FROM events WHERE type = 'gc.finished'")
        assert [e["payload"]["bytes_freed"] for e in ev] == [done.result["bytes_freed"]]
    finally:
        await store.close()


async def test_damaged_backup_mail_reaches_the_policy_once(catalog, smtp):
    """A `backup.damaged` event (recorded the way the verify job records it) is
    mailed to the policy whose run made the backup, once across two replicas."""
    from imageio_ext.store.verify import DamagedChunk, VerifyReport
    from orchestrator.catalog import NewMachine
    from orchestrator.jobs.verify import record_result
    cfg, inbox = smtp
    cfg.base_url = "https://ovault.example:8443"
    engine = Engine("db-9")
    vm = engine.vms[0]
    clock = Clock(datetime.now(UTC))
    p = await catalog.policies.create({
        "name": "gold", "schedule": "0 2 * * *", "timezone": "UTC", "rules": {"tags": ["gold"]},
        "notify": {"emails": ["ops@example.com"], "on": ["failure"]}}, scheduled_through=clock.t)
    job = await catalog.jobs.create("backup", [NewMachine(vm_id=vm.id, vm_name=vm.name)])
    await catalog.policies.tag_job(job.id, p.id)
    b = await catalog.backups.create(vm_id=vm.id, vm_name=vm.name, mode="full", method="cbt",
                                     job_id=job.id)
    await catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")
    report = VerifyReport(vm_id=vm.id, backup_id=str(b.id), chunks_checked=9, damaged=[
        DamagedChunk(digest="ab" * 32, reason="digest mismatch",
                     disk_offsets={"disk-1": [4194304]}, length=65536)])
    info = SimpleNamespace(backup_id=str(b.id), vm_id=vm.id)
    assert await record_result(catalog, info, report) == "became damaged"
    svc = PolicyService(catalog, engine, clock=clock)
    replicas = [Maintenance(catalog, svc, replica=r, settings=Policies(gc_schedule="",
                                                                        verify_schedule="",
                                                                        summary_schedule=""),
                            mailer=Mailer(cfg), clock=clock) for r in ("A", "B")]
    sent = [await m.damaged() for m in replicas] + [await m.damaged() for m in replicas]
    assert sum(sent) == 1
    assert len(inbox.mails) == 1
    to, msg = inbox.mails[0]
    assert to == ["ops@example.com"]
    assert msg["Subject"] == "[ovault] backup of VM db-9 is damaged"
    body = msg.get_payload(decode=True).decode()
    assert f"backup {b.id} of VM db-9 ({vm.id})" in body and "Damaged chunks: 1" in body
    assert "disk disk-1: 65536 bytes at offset 4194304" in body
    assert f"https://ovault.example:8443/api/v1/backups/{b.id}" in body and "Policy: gold" in body
    # a manual backup of a VM whose policy does not ask for failure mail: nothing sent
    await catalog.policies.update(p.id, {**p.fields(), "notify": {"emails": ["ops@example.com"], "on": ["success"]}})
    b2 = await catalog.backups.create(vm_id=vm.id, vm_name=vm.name, mode="full", method="cbt")
    await catalog.backups.complete(b2.id, size_bytes=1, new_bytes=1, consistency="crash")
    report.backup_id = str(b2.id)
    await record_result(catalog, SimpleNamespace(backup_id=str(b2.id), vm_id=vm.id), report)
    assert await replicas[0].damaged() == 0 and len(inbox.mails) == 1
