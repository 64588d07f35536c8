"""Settings of file-level restore (the `[files]` section)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FileRestore:
    enabled: bool = True  # false: the /files endpoints answer 503
    idle_seconds: float = 300.0  # a browse session (NBD export + libguestfs appliance) unused this long is closed
    per_user: int = 2  # open sessions one user may hold at once (more: 429)
    max_sessions: int = 4  # open sessions on this replica (each runs a small VM of memsize_mib)
    accel: str = "auto"  # auto: KVM when it starts, else TCG; tcg: always TCG (nested hosts where KVM hangs)
    memsize_mib: int = 512  # memory of each libguestfs appliance
    cache_dir: str = ""  # supermin appliance and search indexes; empty: <state_dir>/files
    search_backups: int = 20  # search walks at most this many of a VM's most recent backups
    search_max_entries: int = 200000  # entries indexed per backup disk by search, and per archive (more: truncated, or 422)
    search_max_results: int = 1000  # matching paths returned by one search
