"""What a finished copy reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class CopyResult:
    op: str  # "backup" or "restore"
    vm_id: str
    backup_id: str
    disk_id: str
    size: int  # virtual size of the disk
    bytes_read: int  # backup: read from imageio; restore: plaintext read from the store
    bytes_written: int  # backup: compressed bytes of new chunks; restore: bytes PUT to imageio
    bytes_zeroed: int = 0  # recorded as zero (backup) / PATCH zero (restore)
    bytes_unchanged: int = 0  # incremental: inherited from the parent without reading
    bytes_from_parent: int = 0  # incremental: clean bytes of partly dirty slots, copied from the parent's chunks
    new_chunks: int = 0  # chunks this copy added to the store
    new_bytes: int = 0  # their compressed size
    dedup_chunks: int = 0  # chunks read but already in the store (not sent again)
    adopted_chunks: int = 0  # resumed: slots an interrupted copy of this disk had stored (not read again)
    bytes_adopted: int = 0  # resumed: the disk bytes those slots cover
    reread_offsets: list = field(default_factory=list)  # backup: slots re-read at commit because
    # the target no longer had the chunk inherited from the parent (set aside as damaged, or collected)
    index_sha256: str = ""  # backup: SHA-256 of the .fidx written; restore: of the one read
    disk: dict = field(default_factory=dict)  # backup: the store's DiskInfo (for publish_backup)
    incremental: bool = False  # backup: only dirty ranges were read
    already_published: bool = False  # backup: the backup already existed; nothing was copied
    transport: str = ""  # "unix" (imageio local socket) or "https"
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)
