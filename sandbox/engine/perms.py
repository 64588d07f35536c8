"""Which roles a user holds on an object, and so what they may do and see.

The engine's permission tree: an object's parents are the objects above it
(`parents`), ending at the system; a permission held on any of them applies
to the object (its permits are the union of those roles' permits). What the
engine shows a user under `Filter: true` is narrower: the object itself, or a
parent holding a role whose holders view children (`roles.VIEWS_CHILDREN`).
"""
from __future__ import annotations

from .roles import VIEWS_CHILDREN, role_permits

SYSTEM = ("system", None)


def parents(e, otype: str, oid: str | None) -> list[tuple[str, str | None]]:
    """(type, id) of the object and every object above it, the object first."""
    out: list[tuple[str, str | None]] = [(otype, oid)]
    if otype == "system":
        return out

    def cluster_up(cid):
        cl = e.clusters.get(cid)
        if cl is not None:
            out.append(("cluster", cid))
            out.append(("data_center", cl.dc_id))
    if otype == "vm":
        vm = e.vms.get(oid)
        if vm is not None:
            cluster_up(vm.cluster_id)
    elif otype in ("cluster", "host"):
        if otype == "host":
            h = e.hosts.get(oid)
            cluster_up(h.cluster_id if h else None)
        else:
            cl = e.clusters.get(oid)
            if cl is not None:
                out.append(("data_center", cl.dc_id))
    elif otype == "storage_domain":
        sd = e.sds.get(oid)
        if sd is not None:
            out.append(("data_center", sd.dc_id))
    elif otype == "disk":
        d = e.disks.get(oid)
        if d is not None:
            out.append(("storage_domain", d.sd_id))
            sd = e.sds.get(d.sd_id)
            if sd is not None:
                out.append(("data_center", sd.dc_id))
        for vm in e.vms.values():
            if any(a.disk_id == oid for a in vm.attachments):
                out.append(("vm", vm.id))
                cluster_up(vm.cluster_id)
    out.append(SYSTEM)
    seen, unique = set(), []
    for x in out:
        if x not in seen:
            seen.add(x)
            unique.append(x)
    return unique


def applying(e, otype: str, oid: str | None, user_id: str | None = None) -> list:
    """The permissions that apply to the object (held on it or above it), of
    one user or of everyone."""
    tree = set(parents(e, otype, oid))
    return [p for p in e.permissions if (p.object_type, p.object_id) in tree
            and (user_id is None or p.user_id == user_id)]


def permits(e, user_id: str, otype: str, oid: str | None) -> set[str]:
    """The permit names a user holds on an object."""
    out: set[str] = set()
    for p in applying(e, otype, oid, user_id):
        out |= role_permits(p.role)
    return out


def visible(e, user_id: str, otype: str, oid: str | None) -> bool:
    """Whether `Filter: true` shows the object to the user."""
    for p in applying(e, otype, oid, user_id):
        if (p.object_type, p.object_id) == (otype, oid) or p.role in VIEWS_CHILDREN:
            return True
    return False
