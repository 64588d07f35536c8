"""Progress of one copy: bytes done of total, and a rate over a short window."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass(frozen=True)
class Progress:
    bytes_done: int  # of the disk: copied, recorded as zero, or unchanged since the parent
    bytes_total: int  # the disk's virtual size
    bytes_read: int  # read from the source (imageio for a backup, the store for a restore)
    bytes_written: int  # backup: compressed bytes of new chunks; restore: bytes PUT to imageio
    rate: float  # bytes_done per second over the last few seconds
    elapsed: float  # seconds since the copy started

    def to_dict(self) -> dict:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


class Meter:
    """Counts bytes and calls ``callback`` at most every ``interval`` seconds.

    Bytes that cost nothing (unchanged or zero ranges) are counted with
    `skip` before the clock starts, so the rate is not inflated by them.
    """

    def __init__(self, total: int, callback: ProgressCallback | None = None, *, interval: float = 0.2,
                 window: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.callback = callback
        self.interval = interval
        self.window = window
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.read = 0
        self.written = 0
        self._samples: deque[tuple[float, int]] = deque([(self.start, 0)])
        self._last_report = -1e18

    def skip(self, n: int) -> None:
        self.done += n
        self._samples = deque([(self.clock(), self.done)])

    def add(self, done: int, read: int = 0, written: int = 0) -> None:
        self.done += done
        self.read += read
        self.written += written
        now = self.clock()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        if now - self._last_report >= self.interval:
            self.report(now)

    def rate(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        t0, d0 = self._samples[0]
        return (self.done - d0) / (now - t0) if now > t0 else 0.0

    def snapshot(self, now: float | None = None) -> Progress:
        now = self.clock() if now is None else now
        return Progress(self.done, self.total, self.read, self.written, round(self.rate(now), 1),
                        round(now - self.start, 3))

    def report(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._last_report = now
        if self.callback is not None:
            self.callback(self.snapshot(now))
