import pytest


@pytest.fixture
def store_url(tmp_path):
    """A fresh local directory: the PathTarget backend."""
    d = tmp_path / "target"
    d.mkdir()
    return str(d)
