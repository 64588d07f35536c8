"""After each successful CBT backup the machine removes the engine checkpoints
ovault no longer needs: from the root, while they are ovault's and not the one
the next incremental starts from; another tool's checkpoint stops the walk."""
from __future__ import annotations

from orchestrator.engine.port import chain_order
from statemachines import engine as ev

from .test_statemachines import FakeCatalog, FakeEngine, Journal, backup_machine, deps


async def _backups(e, cat, n):
    for _ in range(n):
        j = Journal()
        assert await backup_machine(j, deps(e, catalog=cat)).run() == "succeeded"
        cat.last = {"id": j.resources["backup_id"], "checkpoint_id": j.resources["engine_backup"]["to_checkpoint"]}
        yield j


async def test_twenty_cbt_backups_leave_one_checkpoint_and_stay_incremental():
    e, cat = FakeEngine(), FakeCatalog()
    modes, froms = [], []
    async for j in _backups(e, cat, 20):
        modes.append(j.resources["mode"])
        froms.append(j.resources["engine_backup"].get("from_checkpoint"))
        assert [c.id for c in e.checkpoints] == [j.resources["engine_backup"]["to_checkpoint"]]
    assert modes == ["full"] + ["incremental"] * 19
    assert froms[1:] == [f"cp-new-{i}" for i in range(1, 20)]  # each starts where the last ended
    assert [c[1] for c in e.calls if c[0] == "remove_checkpoint"] == [f"cp-new-{i}" for i in range(1, 20)]
    assert j.resources["checkpoints_removed"] == ["cp-new-19"]


async def test_foreign_root_checkpoint_is_left_alone_and_blocks_removal():
    e, cat = FakeEngine(), FakeCatalog()
    e.checkpoints.append(ev.Checkpoint(id="other-tool", parent_id=None, state="created"))
    async for _ in _backups(e, cat, 3):
        pass
    assert [c.id for c in e.checkpoints] == ["other-tool", "cp-new-1", "cp-new-2", "cp-new-3"]
    assert not [c for c in e.calls if c[0] == "remove_checkpoint"]


async def test_ours_removed_up_to_a_foreign_one():
    e, cat = FakeEngine(), FakeCatalog()
    async for _ in _backups(e, cat, 1):
        pass
    e.checkpoints.append(ev.Checkpoint(id="other-tool", parent_id="cp-new-1", state="created"))
    async for _ in _backups(e, cat, 2):
        pass
    # cp-new-1 was ours and not needed: removed; the foreign one stops the walk.
    assert [c.id for c in e.checkpoints] == ["other-tool", "cp-new-2", "cp-new-3"]


async def test_a_checkpoint_still_needed_by_another_target_is_kept():
    e, cat = FakeEngine(), FakeCatalog()
    async for _ in _backups(e, cat, 2):
        pass
    orig = cat.checkpoints

    async def two_targets(vm_id):
        r = await orig(vm_id)
        return {"ours": r["ours"], "keep": r["keep"] + ["cp-new-2"]}  # target B's chain ends there
    cat.checkpoints = two_targets
    async for _ in _backups(e, cat, 2):
        pass
    assert [c.id for c in e.checkpoints] == ["cp-new-2", "cp-new-3", "cp-new-4"]


async def test_a_refused_removal_does_not_fail_the_backup():
    e, cat = FakeEngine(), FakeCatalog()

    async def refuse(vm_id, cp_id, correlation_id):
        raise RuntimeError("[Cannot remove VM checkpoint. A backup is in progress.]")
    e.remove_checkpoint = refuse
    jobs = [j async for j in _backups(e, cat, 2)]
    assert len(e.checkpoints) == 2
    assert "backup.checkpoints_kept" in jobs[-1].events


def test_chain_order_follows_parent_links():
    cps = [ev.Checkpoint("c", "b"), ev.Checkpoint("a", None), ev.Checkpoint("b", "a")]
    assert [c.id for c in chain_order(cps)] == ["a", "b", "c"]
    # the root's parent was removed earlier: still the root
    assert [c.id for c in chain_order([ev.Checkpoint("y", "x"), ev.Checkpoint("z", "y")])] == ["y", "z"]


async def test_reread_ranges_are_not_silent():
    """The mover re-read unchanged ranges whose chunks the target no longer had
    (set aside as damaged): the backup succeeds and says so in an event."""
    from .test_statemachines import FakeMover

    class Rereading(FakeMover):
        async def backup_disk(self, **kw):
            r = await super().backup_disk(**kw)
            return {**r, "reread_offsets": [4 << 20]}
    e, cat, j = FakeEngine(), FakeCatalog(), Journal()
    assert await backup_machine(j, deps(e, mover=Rereading(), catalog=cat)).run() == "succeeded"
    assert "backup.chunks_reread" in j.events
