"""The same behaviour suite as tests/unit/store, on a real NFSv3 server via libnfs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "store"))
from store_suite import StoreBehaviour  # noqa: E402

pytestmark = pytest.mark.integration


class TestStoreOnNfs(StoreBehaviour):
    pass
