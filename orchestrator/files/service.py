"""The file-restore service the API holds: sessions, the search index cache and its
background indexing."""
from __future__ import annotations

import asyncio
import contextlib
import os

import structlog

from .indexing import Indexer
from .search import IndexCache, search, walk_index
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
        self.indexer = Indexer(self.sessions, self.index, settings,
                               lambda s: walk_index(s, settings.search_max_entries))
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
        await self.indexer.close()
        await self.sessions.close()

    async def session(self, user: str, backup, disk):
        return await self.sessions.get(user, backup.vm_id, str(backup.id), disk.disk_id,
                                       disk.index_digest)

    async def search(self, backups: list, pattern: str) -> dict:
        """Answers at once; the disks not indexed yet are indexed in the background."""
        return await search(self.index, self.indexer, backups, pattern, self.settings)

    def indexing(self, vm_id: str) -> dict | None:
        """The VM's indexing round (None: none since this server started)."""
        return self.indexer.status(vm_id)
