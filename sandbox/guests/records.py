"""The guests' workload file and its verifier.

The workload (`files/ovault-workload`, in every guest) appends one record per
line to `/var/lib/workload/records.log`:

    SEQ TIMESTAMP_NS PAYLOAD_HEX CHECKSUM\\n

with CHECKSUM the first 16 hex digits of SHA-256("SEQ TIMESTAMP_NS PAYLOAD_HEX").
`verify()` checks a copy of that file (from a restored disk, the guest agent,
a backup) up to its last complete record: every complete line must be a
valid record and the sequence must go up by one. What follows the last newline
is a record being written when the copy was taken (`tail_bytes`). A record torn
by a power cut, followed by records of the next boot, is counted in `torn` when
`allow_torn` (the workload starts a new line after one); otherwise it is an error.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

RECORDS_PATH = "/var/lib/workload/records.log"
_RECORD = re.compile(rb"^(\d+) (\d+) ([0-9a-f]+) ([0-9a-f]{16})$")


class RecordsCorrupt(ValueError):
    pass


@dataclass
class Verified:
    records: int
    first_seq: int | None
    last_seq: int | None
    last_timestamp_ns: int | None
    tail_bytes: int
    torn: int


def checksum(seq: int, ts_ns: int, payload_hex: str) -> str:
    return hashlib.sha256(f"{seq} {ts_ns} {payload_hex}".encode()).hexdigest()[:16]


def record(seq: int, ts_ns: int, payload_hex: str) -> bytes:
    """One record line as the workload writes it."""
    return f"{seq} {ts_ns} {payload_hex} {checksum(seq, ts_ns, payload_hex)}\n".encode()


def verify(data: bytes, allow_torn: bool = False) -> Verified:
    end = data.rfind(b"\n") + 1
    complete, tail = data[:end], data[end:]
    n = torn = 0
    first = last = last_ts = None
    for lineno, line in enumerate(complete.split(b"\n")[:-1], 1):
        m = _RECORD.match(line)
        if m is None or checksum(int(m[1]), int(m[2]), m[3].decode()) != m[4].decode():
            if allow_torn:
                torn += 1
                continue
            raise RecordsCorrupt(f"line {lineno}: not a valid record: {line[:120]!r}")
        seq = int(m[1])
        if last is not None and seq != last + 1:
            raise RecordsCorrupt(f"line {lineno}: sequence {seq} after {last}")
        first = seq if first is None else first
        last, last_ts = seq, int(m[2])
        n += 1
    return Verified(n, first, last, last_ts, len(tail), torn)
