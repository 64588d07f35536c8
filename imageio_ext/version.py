"""The installed ovault's version, from the package metadata (pyproject.toml
is the one place it is written)."""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

__all__ = ["version"]


@lru_cache(maxsize=1)
def version() -> str:
    try:
        return metadata.version("ovault")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
