"""Failed authentications, limited per client address.

A token bucket per remote address: each failed authentication (unknown,
expired or revoked token; a token the engine does not know) takes one token;
the bucket refills at `api.auth_failures_per_minute` up to
`api.auth_failures_burst`. An address whose bucket is empty is answered 429
with `Retry-After` *before* its token is looked at, so guessing tokens costs
the attacker time and never costs the engine an SSO call. Successful requests
take nothing: a busy portal is never limited.

The address is the TCP peer's: behind a reverse proxy every client shares the
proxy's bucket (put the limit in the proxy then, or raise these numbers).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

MAX_ADDRESSES = 50_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class FailureLimiter:
    def __init__(self, burst: int, per_minute: float, *, clock=time.monotonic):
        self.burst = max(1, int(burst))
        self.rate = max(per_minute, 0.001) / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, addr: str) -> _Bucket:
        now = self.clock()
        b = self._buckets.get(addr)
        if b is None:
            return _Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.at) * self.rate)
        b.at = now
        return b

    def retry_after(self, addr: str) -> int:
        """0 if `addr` may try to authenticate now; else the seconds to wait."""
        b = self._buckets.get(addr)
        if b is None:
            return 0
        b = self._bucket(addr)
        if b.tokens >= 1.0:
            if b.tokens >= self.burst:
                del self._buckets[addr]  # full again: forget the address
            return 0
        return max(1, math.ceil((1.0 - b.tokens) / self.rate))

    def failed(self, addr: str) -> None:
        """Record one failed authentication from `addr`."""
        b = self._bucket(addr)
        b.tokens = max(0.0, b.tokens - 1.0)
        if addr not in self._buckets:
            if len(self._buckets) >= MAX_ADDRESSES:
                self._evict()
            self._buckets[addr] = b

    def _evict(self) -> None:
        now = self.clock()
        full = [a for a, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for a in full:
            del self._buckets[a]
        while len(self._buckets) >= MAX_ADDRESSES:  # still full: the oldest entries go
            self._buckets.pop(next(iter(self._buckets)))
