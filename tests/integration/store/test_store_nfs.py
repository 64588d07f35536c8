"""The same behaviour suite as tests/unit/store, on a real NFSv3 server via libnfs."""

import pytest

from tests.unit.store.store_suite import StoreBehaviour

pytestmark = pytest.mark.integration


class TestStoreOnNfs(StoreBehaviour):
    pass


from tests.unit.store.heal_suite import StoreHealBehaviour  # noqa: E402


class TestStoreHealOnNfs(StoreHealBehaviour):
    pass


from tests.unit.store.hostile_suite import HostileTargetBehaviour  # noqa: E402


class TestHostileTargetOnNfs(HostileTargetBehaviour):
    pass
