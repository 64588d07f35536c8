"""What the service connects to the inventory: the policy service reads VMs from
it, a membership change (a VM's name, cluster, tags or existence) asks for a
protection-status check at once (so does a policy created, edited or deleted; so `vm.protection_changed` does not wait for
`policies.protection_interval`), and a permission or VM-set change drops the
per-user caches (SSO visibility, engine permits) so the next request asks the
engine again."""
from __future__ import annotations

from typing import Any, Callable

import structlog

from .cache import Change, Inventory

log = structlog.get_logger("ovault.inventory")

__all__ = ["attach"]


def attach(inv: Inventory, *, service: Any, maintenance: Any = None,
           wake: Callable[[], None] | None = None,
           forget: list[Callable[[], None]] | tuple = ()) -> None:
    service.cache = inv

    def recheck() -> None:
        if maintenance is not None:
            maintenance.request_protection()
            if wake is not None:
                wake()
    service.on_change = recheck     # a policy created, edited or deleted

    def changed(ch: Change) -> None:
        if ch.vm_ids:
            recheck()
        if ch.visibility:
            for fn in forget:
                fn()
        log.debug("inventory changed", vms=len(ch.vm_ids), visibility=ch.visibility,
                  full=ch.full)
    inv.listeners.append(changed)
