"""The store's behaviour on a local directory (PathTarget)."""

from tests.unit.store.store_suite import StoreBehaviour


class TestStoreOnPath(StoreBehaviour):
    pass


from tests.unit.store.hostile_suite import HostileTargetBehaviour  # noqa: E402


class TestHostileTargetOnPath(HostileTargetBehaviour):
    pass
