"""Read-only NBD export of a backup disk (file-level recovery with qemu-nbd, guestfish)."""

from .server import ChunkCache, NbdExport, serve_disk

__all__ = ["serve_disk", "NbdExport", "ChunkCache"]
