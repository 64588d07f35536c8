"""`ovault import` inserts each backup after its parent (the catalog's foreign key), and
an increment whose parent was pruned from the target is imported without a parent."""
from __future__ import annotations

from types import SimpleNamespace as NS

from orchestrator.cli.target import _parents_first


def test_children_come_after_their_parents_whatever_the_listing_order():
    a, b, c = NS(backup_id="a", parent_id=None), NS(backup_id="b", parent_id="a"), NS(backup_id="c", parent_id="b")
    orphan = NS(backup_id="d", parent_id="pruned")
    order = [i.backup_id for i in _parents_first([c, orphan, b, a])]
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order.index("a") < order.index("b") < order.index("c")


def test_a_cycle_does_not_loop():
    x, y = NS(backup_id="x", parent_id="y"), NS(backup_id="y", parent_id="x")
    assert sorted(i.backup_id for i in _parents_first([x, y])) == ["x", "y"]
