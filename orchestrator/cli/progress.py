"""Progress shown while the CLI waits: job machines polled from the server."""
from __future__ import annotations

import sys
import time

from .common import human


class Progress:
    """One line per VM, redrawn in place on a terminal; state changes otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.lines = 0
        self.last: dict = {}
        self.samples: dict = {}

    def draw(self, job: dict):
        rows = []
        for m in job["machines"]:
            key = m["id"]
            now = time.monotonic()
            prev = self.samples.get(key)
            rate = 0.0
            if prev and now > prev[0]:
                rate = max(0.0, (m["bytes_done"] - prev[1]) / (now - prev[0]))
            self.samples[key] = (now, m["bytes_done"])
            frac = m.get("progress") or 0.0
            bar = "#" * int(frac * 30)
            eta = ""
            if rate > 0 and m["bytes_total"]:
                eta = f" ETA {int((m['bytes_total'] - m['bytes_done']) / rate)}s"
            name = (m.get("vm_name") or m["vm_id"])[:20]
            rows.append(f"{name:<20} {m['state']:<9} [{bar:<30}] {frac * 100:5.1f}% "
                        f"{human(m['bytes_done'])}/{human(m['bytes_total'])} "
                        f"{human(rate)}/s{eta}" + (f"  {m['error']}" if m.get("error") else ""))
        if self.tty:
            if self.lines:
                self.stream.write(f"\x1b[{self.lines}F")
            for r in rows:
                self.stream.write("\x1b[2K" + r + "\n")
            self.lines = len(rows)
        else:
            for m, r in zip(job["machines"], rows):
                if self.last.get(m["id"]) != m["state"]:
                    self.stream.write(r + "\n")
                    self.last[m["id"]] = m["state"]
        self.stream.flush()
