"""Which VMs a policy protects (pure): explicit ids plus rules over the engine's
inventory; exclusions win; a VM claimed by two policies is a conflict, reported
on both and backed up by neither until someone fixes the policies.

    inv = [VmRef.from_sdk(vm) for vm in await engine.list_vms_with_tags()]
    a = assign(policies, inv)        # a.members[policy_id], a.conflicts[vm_id]
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["VmRef", "Member", "Assignment", "assign", "evaluate"]


@dataclass(frozen=True)
class VmRef:
    id: str
    name: str | None = None
    cluster_id: str | None = None
    tags: frozenset[str] = frozenset()

    @classmethod
    def from_sdk(cls, vm: Any) -> "VmRef":
        cluster = getattr(vm, "cluster", None)
        tags = getattr(vm, "tags", None) or ()
        return cls(str(vm.id), getattr(vm, "name", None),
                   getattr(cluster, "id", None) if cluster is not None else None,
                   frozenset(t.name for t in tags if getattr(t, "name", None)))


@dataclass(frozen=True)
class Member:
    vm_id: str
    vm_name: str | None
    why: str                 # "explicit", "tag prod", "cluster <id>", "name matches …"


@dataclass
class Assignment:
    # policy id -> members (conflicted VMs included, so both policies show them)
    members: dict[Any, list[Member]] = field(default_factory=dict)
    # policy id -> {vm_id: why excluded}
    excluded: dict[Any, dict[str, str]] = field(default_factory=dict)
    # vm_id -> the ids of every policy that claims it (only when more than one)
    conflicts: dict[str, list[Any]] = field(default_factory=dict)

    def policy_of(self, vm_id: str) -> Any | None:
        """The one policy protecting a VM; None if none or in conflict."""
        if vm_id in self.conflicts:
            return None
        return self._index()[0].get(vm_id)

    def is_excluded(self, vm_id: str) -> bool:
        return vm_id in self._index()[1]

    def _index(self) -> tuple[dict[str, Any], set[str]]:
        """vm_id -> its (first) policy, and the excluded ids: built once, so a list
        of N VMs asks in O(N), not O(N x members)."""
        key = (id(self.members), id(self.excluded), sum(map(len, self.members.values())),
               sum(map(len, self.excluded.values())))
        cached = self.__dict__.get("_idx")
        if cached is None or cached[0] != key:
            owner: dict[str, Any] = {}
            for pid, ms in self.members.items():
                for m in ms:
                    owner.setdefault(m.vm_id, pid)
            excluded = {k for ex in self.excluded.values() for k in ex}
            cached = self.__dict__["_idx"] = (key, owner, excluded)
        return cached[1], cached[2]


def evaluate(vm_ids: Iterable[str], rules: Mapping[str, Any], inventory: Iterable[VmRef]
             ) -> tuple[list[Member], dict[str, str]]:
    """Members of one policy and the VMs its exclusion removed."""
    inv = {v.id.lower(): v for v in inventory}
    explicit = [x.lower() for x in vm_ids]
    tags = set(rules.get("tags") or ())
    clusters = {c.lower() for c in rules.get("cluster_ids") or ()}
    name_re = re.compile(rules["name_regex"]) if rules.get("name_regex") else None
    excl_re = re.compile(rules["exclude_name_regex"]) if rules.get("exclude_name_regex") else None
    found: dict[str, Member] = {}
    for vid in explicit:
        v = inv.get(vid)
        found[vid] = Member(v.id if v else vid, v.name if v else None, "explicit")
    for v in inv.values():
        if v.id.lower() in found:
            continue
        why = None
        hit = sorted(tags & v.tags)
        if hit:
            why = f"tag {hit[0]}"
        elif v.cluster_id and v.cluster_id.lower() in clusters:
            why = f"cluster {v.cluster_id}"
        elif name_re is not None and v.name and name_re.search(v.name):
            why = f"name matches {name_re.pattern}"
        if why:
            found[v.id.lower()] = Member(v.id, v.name, why)
    members, excluded = [], {}
    for key, m in found.items():
        name = m.vm_name
        if excl_re is not None and name and excl_re.search(name):
            excluded[m.vm_id] = f"name matches exclude_name_regex {excl_re.pattern}"
        else:
            members.append(m)
    members.sort(key=lambda m: (m.vm_name or "", m.vm_id))
    return members, excluded


def assign(policies: Iterable[Any], inventory: Iterable[VmRef]) -> Assignment:
    """Evaluate every policy (objects with id, vm_ids, rules, enabled); a VM in two
    enabled policies is a conflict."""
    inv = list(inventory)
    a = Assignment()
    claims: dict[str, list[Any]] = {}
    for p in policies:
        members, excluded = evaluate(p.vm_ids, p.rules or {}, inv)
        a.members[p.id] = members
        a.excluded[p.id] = excluded
        if getattr(p, "enabled", True):
            for m in members:
                claims.setdefault(m.vm_id.lower(), []).append(p.id)
    a.conflicts = {vid: pids for vid, pids in claims.items() if len(pids) > 1}
    # conflicts keyed by the VM's own spelling of its id
    spelled = {m.vm_id.lower(): m.vm_id for ms in a.members.values() for m in ms}
    a.conflicts = {spelled.get(k, k): v for k, v in a.conflicts.items()}
    return a
