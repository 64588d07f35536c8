"""Store format version 2 (plain and encrypted) on a real NFSv3 server via libnfs:
the same checks as tests/unit/store/test_store_v2.py that go through the store's
own API only."""

import pytest

from tests.unit.store.test_store_v2 import test_v2_full_and_incremental_round_trip as _round_trip
from tests.unit.store.test_store_v2 import test_wrong_or_missing_key_is_named as _keys

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("encrypted", [False, True])
async def test_v2_full_and_incremental_round_trip_on_nfs(store_url, encrypted):
    await _round_trip(store_url, encrypted)


async def test_wrong_or_missing_key_is_named_on_nfs(store_url):
    await _keys(store_url)
