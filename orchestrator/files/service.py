"""The file-restore service the API holds: sessions, the search index cache."""
from __future__ import annotations

import os

from .search import IndexCache, search
from .sessions import SessionManager
from .settings import FileRestore


class FileService:
    def __init__(self, store, settings: FileRestore, state_dir: str):
        self.settings = settings
        self.cache_dir = settings.cache_dir or os.path.join(state_dir, "files")
        self.sessions = SessionManager(store, settings, self.cache_dir)
        self.index = IndexCache(self.cache_dir)

    def start(self) -> None:
        self.sessions.start()

    async def close(self) -> None:
        await self.sessions.close()

    async def session(self, user: str, backup, disk):
        return await self.sessions.get(user, backup.vm_id, str(backup.id), disk.disk_id,
                                       disk.index_digest)

    async def search(self, user: str, backups: list, pattern: str) -> dict:
        return await search(self.sessions, self.index, user, backups, pattern, self.settings)
