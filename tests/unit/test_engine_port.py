"""The machines' engine port: the Protocol, its real implementation over the
SDK client and the unit tests' fake all have the same methods and signatures;
the real one turns SDK objects into ovault's values and recognises a refused
checkpoint from the engine's fault."""
from __future__ import annotations

import inspect
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from orchestrator.engine.port import EnginePort, apply_config, to_transfer, to_vm
from orchestrator.errors import EngineError
from statemachines import engine as ev

from .test_statemachines import FakeEngine

ROOT = Path(__file__).resolve().parents[2]


def _methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(cls).items()
            if inspect.iscoroutinefunction(fn) and not name.startswith("_")}


def _shape(sig: inspect.Signature):
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("impl", [FakeEngine, EnginePort], ids=["fake", "port"])
def test_implementations_match_the_protocol(impl):
    proto = _methods(ev.Engine)
    assert len(proto) >= 25
    mine = _methods(impl)
    assert set(mine) == set(proto), (set(proto) - set(mine), set(mine) - set(proto))
    for name, sig in proto.items():
        assert _shape(mine[name]) == _shape(sig), name


def test_the_sdk_stays_inside_the_engine_package():
    offenders = [str(p.relative_to(ROOT)) for pkg in ("statemachines", "orchestrator")
                 for p in (ROOT / pkg).rglob("*.py")
                 if "ovirtsdk4" in p.read_text() and "orchestrator/engine" not in str(p)]
    assert offenders == []


class Client:
    """Stands in for EngineClient: answers start_backup with a conflict fault."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    async def start_backup(self, vm_id, backup_id, disk_ids, from_cp, description, cid,
                           require_consistency=False):
        fault = types.Fault(reason="Operation Failed",
                            detail=f"[Cannot backup VM. Checkpoint {from_cp} is invalid.]")
        cause = sdk.Error("conflict", code=409, fault=fault)
        try:
            raise cause
        except sdk.Error as e:
            raise EngineError("conflict") from e

    async def get_checkpoint(self, vm_id, cp_id):
        return self.checkpoint


async def test_a_conflict_on_an_invalid_or_missing_checkpoint_is_a_refused_checkpoint():
    for cp in (None, types.Checkpoint(id="cp1", state=types.CheckpointState.INVALID)):
        with pytest.raises(ev.CheckpointRefused) as info:
            await EnginePort(Client(cp)).start_backup("vm", "b", ["d"], "cp1", "x", "c")
        assert info.value.checkpoint_id == "cp1"
        assert info.value.detail == "[Cannot backup VM. Checkpoint cp1 is invalid.]"


async def test_a_conflict_with_a_good_checkpoint_is_the_engines_error():
    good = types.Checkpoint(id="cp1", state=types.CheckpointState.CREATED)
    with pytest.raises(EngineError):
        await EnginePort(Client(good)).start_backup("vm", "b", ["d"], "cp1", "x", "c")
    with pytest.raises(EngineError):  # no checkpoint asked for: nothing to refuse
        await EnginePort(Client(None)).start_backup("vm", "b", ["d"], None, "x", "c")


def test_sdk_objects_become_values_and_back():
    vm = to_vm(types.Vm(
        id="v", name="web", status=types.VmStatus.DOWN, type=types.VmType.SERVER, memory=1 << 30,
        cluster=types.Cluster(id="c"), description="d",
        cpu=types.Cpu(topology=types.CpuTopology(sockets=1, cores=2, threads=1)),
        os=types.OperatingSystem(type="rhel_8x64", boot=types.Boot(devices=[types.BootDevice.HD])),
        bios=types.Bios(type=types.BiosType.Q35_SEA_BIOS),
        initialization=types.Initialization(configuration=types.Configuration(data="<ovf/>"))))
    assert vm == ev.Vm(id="v", name="web", status="down", type="server", cluster_id="c",
                       ovf="<ovf/>", config=ev.VmConfig(
                           memory=1 << 30, cpu=ev.CpuTopology(1, 2, 1), os_type="rhel_8x64",
                           boot_devices=("hd",), bios_type="q35_sea_bios", description="d",
                           high_availability=False))
    back = apply_config(types.Vm(), vm.config)
    assert (back.memory, back.cpu.topology.cores, back.os.boot.devices, back.bios.type,
            back.high_availability.enabled) == (1 << 30, 2, [types.BootDevice.HD],
                                                types.BiosType.Q35_SEA_BIOS, False)
    t = to_transfer(types.ImageTransfer(id="t", phase=types.ImageTransferPhase.TRANSFERRING,
                                        direction=types.ImageTransferDirection.DOWNLOAD,
                                        host=types.Host(id="h"), disk=types.Disk(id="d"),
                                        transfer_url="https://h/images/t"))
    assert t == ev.Transfer(id="t", phase="transferring", direction="download", disk_id="d",
                            host_id="h", transfer_url="https://h/images/t")
