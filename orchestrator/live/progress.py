"""Throughput and ETA from progress samples: the one place they are computed.

Every replica's hub hears every machine's progress samples (LISTEN), so each
one knows every running machine's rate. The websocket's `progress` messages
carry it (`message`), and the REST job view gets the same figures
(`annotate`, for `GET /api/v1/jobs…` and the websocket's `job.snapshot`):
`rate_bps` and `eta_seconds` per machine and per disk. The CLI and the UI plugin
show these and compute none of their own.

Samples carry the publishing replica's wall-clock time, so the rate does not
depend on how late a NOTIFY reached us. The rate is an exponentially weighted
moving average of bytes/second between samples (alpha 0.5: it follows a
changing rate within a few seconds without jumping on every sample). A rate
not refreshed for `STALE_SECONDS` is unknown (null), not the last value.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from statemachines.lifecycle import TERMINAL

ALPHA = 0.5
FORGET_SECONDS = 600.0
STALE_SECONDS = 15.0


@dataclass
class _Rate:
    t: float
    done: int
    rate: float | None = None

    def update(self, t: float, done: int) -> float | None:
        dt = t - self.t
        if dt > 0.05:
            inst = max(0, done - self.done) / dt
            self.rate = inst if self.rate is None else ALPHA * inst + (1 - ALPHA) * self.rate
            self.t, self.done = t, done
        elif done < self.done:  # a restart of the copy
            self.t, self.done = t, done
        return self.rate


@dataclass
class _Machine:
    total: _Rate
    disks: dict = field(default_factory=dict)
    seen: float = 0.0


def _eta(done: int, total: int, rate: float | None) -> float | None:
    if total <= 0 or done >= total:
        return 0.0 if total > 0 else None
    if not rate:
        return None
    return round((total - done) / rate, 1)


class ProgressTracker:
    def __init__(self):
        self._m: dict[str, _Machine] = {}

    def message(self, p: dict) -> dict:
        """A `progress` message for one sample (see `messages`)."""
        t = float(p.get("t") or time.time())
        done, total = int(p.get("bytes_done") or 0), int(p.get("bytes_total") or 0)
        key = str(p.get("machine_id"))
        m = self._m.get(key)
        if m is None:
            m = self._m[key] = _Machine(_Rate(t, done))
            rate = None
        else:
            rate = m.total.update(t, done)
        m.seen = time.monotonic()
        disks = {}
        for disk_id, d in (p.get("disks") or {}).items():
            dd, dt_ = int(d.get("done") or d.get("bytes_done") or 0), int(d.get("total") or d.get("bytes_total") or 0)
            r = m.disks.get(disk_id)
            if r is None:
                m.disks[disk_id] = r = _Rate(t, dd)
                drate = None
            else:
                drate = r.update(t, dd)
            disks[disk_id] = {"bytes_done": dd, "bytes_total": dt_,
                              "progress": round(dd / dt_, 4) if dt_ else 0.0,
                              "rate_bps": None if drate is None else int(drate),
                              "eta_seconds": _eta(dd, dt_, drate),
                              "state": "done" if dt_ and dd >= dt_ else ("copying" if dd else "waiting"),
                              **({"alias": d["alias"]} if d.get("alias") else {})}
        self._forget()
        return {"type": "progress", "job_id": p.get("job_id"), "machine_id": key,
                "vm_id": p.get("vm_id"), "bytes_done": done, "bytes_total": total,
                "progress": round(done / total, 4) if total else 0.0,
                "rate_bps": None if rate is None else int(rate), "eta_seconds": _eta(done, total, rate),
                "disks": disks, "time": _iso(t)}

    def annotate(self, job: dict) -> dict:
        """Add `rate_bps` and `eta_seconds` to a REST job view (`api.views.job`),
        per machine and per disk, from the samples heard for its machines.
        Finished machines and machines not heard from lately get null rates."""
        now = time.monotonic()
        for m in job.get("machines") or ():
            live = self._m.get(str(m.get("id")))
            fresh = live is not None and now - live.seen <= STALE_SECONDS and m.get("state") not in TERMINAL
            rate = live.total.rate if fresh else None
            m["rate_bps"] = None if rate is None else int(rate)
            m["eta_seconds"] = _eta(int(m.get("bytes_done") or 0), int(m.get("bytes_total") or 0), rate)
            for disk_id, d in (m.get("disks") or {}).items():
                if not isinstance(d, dict):
                    continue
                r = live.disks.get(disk_id) if fresh else None
                drate = r.rate if r is not None else None
                d["rate_bps"] = None if drate is None else int(drate)
                d["eta_seconds"] = _eta(int(d.get("done") or d.get("bytes_done") or 0),
                                        int(d.get("total") or d.get("bytes_total") or 0), drate)
        return job

    def _forget(self):
        if len(self._m) < 256:
            return
        old = time.monotonic() - FORGET_SECONDS
        for k in [k for k, m in self._m.items() if m.seen < old]:
            del self._m[k]


def _iso(t: float) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()
