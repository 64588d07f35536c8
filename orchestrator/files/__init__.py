"""File-level restore: browse, download and search a backup disk's file
systems through the store's read-only NBD export and libguestfs
(docs/file-restore.md)."""
from .guest import GuestfsError
from .paths import split as split_path
from .service import FileService
from .sessions import TooManySessions
from .settings import FileRestore

__all__ = ["FileService", "FileRestore", "GuestfsError", "TooManySessions", "split_path"]
