"""Turning imageio extents into chunk-aligned copy steps (pure functions).

imageio reports extents at the granularity of the image (qcow2 clusters,
64 KiB); the store works in fixed chunks (4 MiB). A backup step is one of:

- ``zero``: a run of whole chunk slots that are all zeros — recorded in the
  index, nothing is read (`DiskWriter.write_zero`);
- ``data``: one chunk slot holding some data. Only the span from its first to
  its last non-zero byte is read; the rest of the slot is known to be zeros.

In an incremental plan (``dirty_only``) slots that no dirty extent touches are
left out: the store's incremental writer inherits them from the parent index.
A slot touched by a dirty extent is rebuilt in the copy engine: only its dirty
non-zero ranges are read from imageio (``parts`` of kind ``read``); its clean
non-zero ranges come from the parent's chunk in the store (``parent``); zero
ranges are known. A slot whose parent chunk has another length (the disk was
resized) is read whole, minus its known-zero edges, as in a full backup — and
is read even when not dirty, since the writer cannot inherit it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from .errors import BadExtents


@dataclass(frozen=True)
class ImageExtent:
    start: int
    length: int
    zero: bool
    dirty: bool = True  # zero-context extents count as dirty (everything is read)

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class Step:
    kind: Literal["zero", "data"]
    offset: int  # chunk-aligned slot start
    length: int  # whole slots (last one may be short at the disk end)
    read_start: int = 0  # data: absolute byte range to read, inside the slot
    read_end: int = 0
    # Incremental sub-chunk step: (start, end, "read" | "parent") absolute ranges in
    # order; the rest of the slot is zeros. Empty: read [read_start, read_end).
    parts: tuple[tuple[int, int, str], ...] = ()

    @property
    def read_length(self) -> int:
        if self.parts:
            return sum(e - s for s, e, how in self.parts if how == "read")
        return self.read_end - self.read_start

    @property
    def reads(self) -> list[tuple[int, int]]:
        """Absolute (offset, length) ranges this step reads from the disk."""
        if self.parts:
            return [(s, e - s) for s, e, how in self.parts if how == "read"]
        return [(self.read_start, self.read_length)] if self.read_length else []


def check_extents(extents: Iterable[ImageExtent], size: int) -> list[ImageExtent]:
    """Extents must tile [0, size) in order; imageio may report past the end
    of a short last cluster, which is clipped."""
    out: list[ImageExtent] = []
    pos = 0
    for e in extents:
        if e.start != pos or e.length <= 0:
            raise BadExtents(f"extent at {e.start} (length {e.length}) does not start where the previous ended ({pos})")
        if pos >= size:
            break
        if e.end > size:
            e = ImageExtent(e.start, size - e.start, e.zero, e.dirty)
        out.append(e)
        pos = e.end
    if pos < size:
        raise BadExtents(f"extents end at {pos}, the disk is {size} bytes")
    return out


READ_GAP = 64 * 1024  # dirty ranges closer than this are read in one request (the gap is read too)


def plan_backup(extents: Iterable[ImageExtent], size: int, chunk_size: int, *, dirty_only: bool = False,
                max_read: int | None = None, parent_size: int | None = None) -> list[Step]:
    """Steps of one slot each; with ``max_read``, adjacent data slots whose
    bytes run on without a known-zero gap are merged into one step of up to
    ``max_read`` bytes (one imageio request for several chunks).

    ``parent_size`` (incremental): the parent's size of this disk; slots whose
    parent chunk has the same length are patched from it (sub-chunk reads)."""
    if dirty_only and parent_size is None:
        parent_size = size
    steps = _slot_steps(check_extents(extents, size), size, chunk_size, dirty_only, parent_size or 0)
    return _merge_reads(steps, max_read) if max_read and max_read > chunk_size else steps


def _merge_reads(steps: list[Step], max_read: int) -> list[Step]:
    out: list[Step] = []
    for s in steps:
        last = out[-1] if out else None
        if (last is not None and s.kind == "data" and last.kind == "data" and not s.parts and not last.parts
                and last.offset + last.length == s.offset  # adjacent slots
                and last.read_end == s.offset and s.read_start == s.offset  # no zero gap between
                and s.offset + s.length - last.offset <= max_read):
            out[-1] = Step("data", last.offset, last.length + s.length, last.read_start, s.read_end)
        else:
            out.append(s)
    return out


def _same_len(slot_start: int, slot_end: int, size: int, parent_size: int, chunk_size: int) -> bool:
    """Whether the parent's chunk at this slot has the slot's length (can be patched/inherited)."""
    return slot_end <= parent_size and (slot_end - slot_start == chunk_size or parent_size == size)


def _slot_steps(ext: list[ImageExtent], size: int, chunk_size: int, dirty_only: bool,
                parent_size: int) -> list[Step]:
    steps: list[Step] = []
    k = 0  # first extent that may overlap the current slot
    for slot_start in range(0, size, chunk_size):
        slot_end = min(slot_start + chunk_size, size)
        while ext[k].end <= slot_start:
            k += 1
        patchable = dirty_only and _same_len(slot_start, slot_end, size, parent_size, chunk_size)
        # A slot the writer cannot inherit (the parent's chunk has another length) is read.
        dirty = not dirty_only or (slot_start < parent_size and not patchable)
        lo = hi = -1
        pieces: list[tuple[int, int, str]] = []
        j = k
        while j < len(ext) and ext[j].start < slot_end:
            e = ext[j]
            dirty = dirty or e.dirty
            if not e.zero:
                s, t = max(e.start, slot_start), min(e.end, slot_end)
                lo = s if lo < 0 else lo
                hi = t
                how = "read" if e.dirty else "parent"
                if pieces and pieces[-1][2] == how and pieces[-1][1] == s:
                    pieces[-1] = (pieces[-1][0], t, how)
                else:
                    pieces.append((s, t, how))
            j += 1
        if not dirty:
            continue
        if lo < 0:
            last = steps[-1] if steps else None
            if last is not None and last.kind == "zero" and last.offset + last.length == slot_start:
                steps[-1] = Step("zero", last.offset, slot_end - last.offset)
            else:
                steps.append(Step("zero", slot_start, slot_end - slot_start))
        elif patchable and any(how == "parent" for _, _, how in pieces):
            steps.append(Step("data", slot_start, slot_end - slot_start, lo, hi, _join_reads(pieces)))
        else:
            steps.append(Step("data", slot_start, slot_end - slot_start, lo, hi))
    return steps


def _join_reads(pieces: list[tuple[int, int, str]]) -> tuple[tuple[int, int, str], ...]:
    """Reads closer than READ_GAP become one read (the bytes between are read
    too: clean data equals the parent's, zeros are zeros); parent ranges inside
    such a read are dropped."""
    reads = [p for p in pieces if p[2] == "read"]
    merged: list[tuple[int, int, str]] = []
    for s, t, how in reads:
        if merged and s - merged[-1][1] <= READ_GAP:
            merged[-1] = (merged[-1][0], t, how)
        else:
            merged.append((s, t, how))
    out = list(merged)
    for s, t, how in pieces:
        if how != "parent":
            continue
        # The parts of this parent range not covered by a merged read.
        cur = s
        for rs, rt, _ in merged:
            if rt <= cur or rs >= t:
                continue
            if rs > cur:
                out.append((cur, rs, "parent"))
            cur = max(cur, rt)
        if cur < t:
            out.append((cur, t, "parent"))
    return tuple(sorted(out))
