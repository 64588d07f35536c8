"""Turning imageio extents into chunk-aligned copy steps (pure functions).

imageio reports extents at the granularity of the image (qcow2 clusters,
64 KiB); the store works in fixed chunks (4 MiB). A backup step is one of:

- ``zero``: a run of whole chunk slots that are all zeros — recorded in the
  index, nothing is read (`DiskWriter.write_zero`);
- ``data``: one chunk slot holding some data. Only the span from its first to
  its last non-zero byte is read; the rest of the slot is known to be zeros.

In an incremental plan (``dirty_only``) slots that no dirty extent touches are
left out: the store's incremental writer inherits them from the parent index.
A slot touched by a dirty extent is re-read whole (the chunk digest covers the
whole slot), minus its known-zero edges.
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

    @property
    def read_length(self) -> int:
        return self.read_end - self.read_start


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


def plan_backup(extents: Iterable[ImageExtent], size: int, chunk_size: int, *, dirty_only: bool = False,
                max_read: int | None = None) -> list[Step]:
    """Steps of one slot each; with ``max_read``, adjacent data slots whose
    bytes run on without a known-zero gap are merged into one step of up to
    ``max_read`` bytes (one imageio request for several chunks)."""
    steps = _slot_steps(check_extents(extents, size), size, chunk_size, dirty_only)
    return _merge_reads(steps, max_read) if max_read and max_read > chunk_size else steps


def _merge_reads(steps: list[Step], max_read: int) -> list[Step]:
    out: list[Step] = []
    for s in steps:
        last = out[-1] if out else None
        if (last is not None and s.kind == "data" and last.kind == "data"
                and last.offset + last.length == s.offset  # adjacent slots
                and last.read_end == s.offset and s.read_start == s.offset  # no zero gap between
                and s.offset + s.length - last.offset <= max_read):
            out[-1] = Step("data", last.offset, last.length + s.length, last.read_start, s.read_end)
        else:
            out.append(s)
    return out


def _slot_steps(ext: list[ImageExtent], size: int, chunk_size: int, dirty_only: bool) -> list[Step]:
    steps: list[Step] = []
    k = 0  # first extent that may overlap the current slot
    for slot_start in range(0, size, chunk_size):
        slot_end = min(slot_start + chunk_size, size)
        while ext[k].end <= slot_start:
            k += 1
        dirty = not dirty_only
        lo = hi = -1
        j = k
        while j < len(ext) and ext[j].start < slot_end:
            e = ext[j]
            dirty = dirty or e.dirty
            if not e.zero:
                s, t = max(e.start, slot_start), min(e.end, slot_end)
                lo = s if lo < 0 else lo
                hi = t
            j += 1
        if not dirty:
            continue
        if lo < 0:
            last = steps[-1] if steps else None
            if last is not None and last.kind == "zero" and last.offset + last.length == slot_start:
                steps[-1] = Step("zero", last.offset, slot_end - last.offset)
            else:
                steps.append(Step("zero", slot_start, slot_end - slot_start))
        else:
            steps.append(Step("data", slot_start, slot_end - slot_start, lo, hi))
    return steps
