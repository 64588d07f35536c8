"""A backup machine holds a "publish" writer lease on its target for its whole run
(orchestrator/jobs/runner.py), so gc keeps the chunks of disks committed but not yet
published; other machines hold none, and a target that refuses the lease does not
stop the backup."""
from __future__ import annotations

import asyncio

import pytest

from imageio_ext.store.leases import read_leases
from imageio_ext.store.path_target import PathTarget
from orchestrator.jobs.runner import _publish_lease
from statemachines import BackupMachine


class _Store:
    def __init__(self, target):
        self.target = target


class _Port:
    def __init__(self, target):
        self.store = _Store(target)


def _backup_machine(vm_id: str) -> BackupMachine:
    vm = BackupMachine.__new__(BackupMachine)  # only its type and vm_id matter here
    vm.vm_id = vm_id
    return vm


async def test_backup_machine_holds_a_publish_lease_while_it_runs(tmp_path):
    target = PathTarget(tmp_path)
    async with _publish_lease(_Port(target), _backup_machine("vm-1")):
        leases = await read_leases(target)
        assert len(leases) == 1 and leases[0].vm_id == "vm-1" and leases[0].valid
        assert leases[0].live(leases[0].mtime)
    assert await read_leases(target) == []


async def test_the_lease_names_the_backup_once_the_machine_has_one(tmp_path):
    target = PathTarget(tmp_path)
    vm = _backup_machine("vm-6")

    class Journal:
        resources: dict = {}
    vm.journal = Journal()
    async with _publish_lease(_Port(target), vm):
        assert (await read_leases(target))[0].backup_id is None
        vm.journal.resources = {"backup_id": "b-6"}
        for _ in range(40):
            await asyncio.sleep(0.1)
            if (await read_leases(target))[0].backup_id == "b-6":
                break
        assert (await read_leases(target))[0].backup_id == "b-6"
    assert await read_leases(target) == []


async def test_lease_released_when_the_machine_raises(tmp_path):
    target = PathTarget(tmp_path)
    with pytest.raises(RuntimeError):
        async with _publish_lease(_Port(target), _backup_machine("vm-2")):
            raise RuntimeError("step failed")
    assert await read_leases(target) == []


async def test_other_machines_and_portless_stores_hold_none(tmp_path):
    target = PathTarget(tmp_path)

    class NotABackup:
        vm_id = "vm-3"
    async with _publish_lease(_Port(target), NotABackup()):
        assert await read_leases(target) == []
    async with _publish_lease(object(), _backup_machine("vm-4")):
        assert await read_leases(target) == []


async def test_a_refused_lease_does_not_stop_the_backup(tmp_path):
    class Refusing(PathTarget):
        async def write_file(self, *a, **k):
            raise PermissionError("read-only target")
    target = Refusing(tmp_path)
    ran = False
    async with _publish_lease(_Port(target), _backup_machine("vm-5")):
        ran = True
        assert await read_leases(target) == []
    assert ran
