"""Damaged chunks set aside and healed, on a local directory (PathTarget)."""

from tests.unit.store.heal_suite import StoreHealBehaviour


class TestStoreHealOnPath(StoreHealBehaviour):
    pass
