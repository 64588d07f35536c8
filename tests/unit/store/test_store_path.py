"""The store's behaviour on a local directory (PathTarget)."""

from store_suite import StoreBehaviour


class TestStoreOnPath(StoreBehaviour):
    pass
