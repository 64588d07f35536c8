"""The file-restore service the API holds: sessions, the search index cache."""
from __future__ import annotations

import asyncio
import contextlib
import os

import structlog

from .search import IndexCache, search
from .sessions import SessionManager
from .settings import FileRestore


log = structlog.get_logger("ovault.files")

INDEX_PRUNE_SECONDS = 3600.0


class FileService:
    """``live_backups(ids)``: those of the backup ids the catalog still holds; the search
    indexes of the others are removed soon after start and then every hour."""

    def __init__(self, store, settings: FileRestore, state_dir: str, live_backups=None):
        self.settings = settings
        self.cache_dir = settings.cache_dir or os.path.join(state_dir, "files")
        self.sessions = SessionManager(store, settings, self.cache_dir)
        self.index = IndexCache(self.cache_dir)
        self._live = live_backups
        self._pruner: asyncio.Task | None = None

    def start(self) -> None:
        self.sessions.start()
        if self._live is not None:
            self._pruner = asyncio.create_task(self._prune_loop())

    async def _prune_loop(self, first: float = 60.0, every: float = INDEX_PRUNE_SECONDS) -> None:
        await asyncio.sleep(first)
        while True:
            try:
                await self.index.prune(self._live)
            except Exception as e:  # the catalog is away: next time
                log.warning("files.index_prune_failed", error=str(e))
            await asyncio.sleep(every)

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        await self.sessions.close()

    async def session(self, user: str, backup, disk):
        return await self.sessions.get(user, backup.vm_id, str(backup.id), disk.disk_id,
                                       disk.index_digest)

    async def search(self, user: str, backups: list, pattern: str) -> dict:
        return await search(self.sessions, self.index, user, backups, pattern, self.settings)
