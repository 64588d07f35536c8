"""Policy membership (pure): explicit ids, tags, clusters, names; exclusions win;
a VM claimed by two enabled policies is a conflict on both."""
from types import SimpleNamespace as NS

from orchestrator.policies.membership import VmRef, assign, evaluate

INV = [VmRef("A1", "db-1", "c1", frozenset({"prod"})),
       VmRef("B2", "web-1", "c2", frozenset()),
       VmRef("C3", "tmp-db", "c1", frozenset({"prod"})),
       VmRef("D4", "db-2", "c3", frozenset({"dev"}))]


def test_rules_and_reasons():
    members, excluded = evaluate(["b2", "gone-vm"], {"tags": ["prod"], "cluster_ids": ["C3"],
                                                      "exclude_name_regex": "^tmp-"}, INV)
    assert [(m.vm_id, m.why) for m in members] == [
        ("gone-vm", "explicit"), ("A1", "tag prod"), ("D4", "cluster c3"), ("B2", "explicit")]
    assert excluded == {"C3": "name matches exclude_name_regex ^tmp-"}
    # exclusions win over an explicit id too; empty rules match nothing
    members, excluded = evaluate(["C3"], {"exclude_name_regex": "tmp"}, INV)
    assert members == [] and list(excluded) == ["C3"]
    assert evaluate([], {}, INV) == ([], {})
    members, _ = evaluate([], {"name_regex": "^db-"}, INV)
    assert [m.vm_id for m in members] == ["A1", "D4"]


def test_conflicts_are_shown_on_both_and_protect_nobody():
    p1 = NS(id="p1", vm_ids=[], rules={"tags": ["prod"]}, enabled=True)
    p2 = NS(id="p2", vm_ids=["A1"], rules={}, enabled=True)
    p3 = NS(id="p3", vm_ids=["D4"], rules={"name_regex": "web"}, enabled=False)
    a = assign([p1, p2, p3], INV)
    assert a.conflicts == {"A1": ["p1", "p2"]}
    assert a.policy_of("A1") is None and a.policy_of("C3") == "p1"
    assert a.policy_of("D4") == "p3"          # the caller treats a disabled policy as none
    assert [m.vm_id for m in a.members["p2"]] == ["A1"]


def test_from_sdk_shape():
    vm = NS(id="X", name="n", cluster=NS(id="c9"), tags=[NS(name="gold"), NS(name=None)])
    assert VmRef.from_sdk(vm) == VmRef("X", "n", "c9", frozenset({"gold"}))
    assert VmRef.from_sdk(NS(id="Y", name=None, cluster=None, tags=None)) == VmRef("Y")
