"""The sandbox guests' records verifier and file-write helpers (pure)."""
from __future__ import annotations

import io
import tarfile

import pytest

from sandbox.guests import records
from sandbox.guests.manager import check_guest_path, files_tar


def _file(n: int, start: int = 1) -> bytes:
    return b"".join(records.record(s, 1_700_000_000_000_000_000 + s, f"{s:064x}")
                    for s in range(start, start + n))


def test_verify_counts_complete_records_and_ignores_the_torn_tail():
    data = _file(5)
    v = records.verify(data + b"6 17000000")
    assert (v.records, v.first_seq, v.last_seq, v.tail_bytes, v.torn) == (5, 1, 5, 10, 0)
    assert records.verify(b"").records == 0


def test_verify_refuses_a_bad_checksum_or_a_gap():
    good = _file(3)
    bad = good.replace(b"2 1700000000000000002", b"2 1700000000000000009")
    with pytest.raises(records.RecordsCorrupt, match="line 2"):
        records.verify(bad)
    with pytest.raises(records.RecordsCorrupt, match="sequence 5 after 3"):
        records.verify(good + _file(1, start=5))


def test_verify_allows_a_line_torn_by_a_power_cut_only_when_asked():
    # the workload starts a new line after a torn one and goes on with its sequence
    data = _file(3) + b"4 1700000000\n" + _file(2, start=4)
    with pytest.raises(records.RecordsCorrupt):
        records.verify(data)
    v = records.verify(data, allow_torn=True)
    assert (v.records, v.last_seq, v.torn) == (5, 5, 1)


def test_guest_paths_and_the_edit_tar():
    assert check_guest_path("/etc/hostname") == "/etc/hostname"
    for bad in ("etc/hostname", "/", "/etc/../root", "/a/./b", "/x\0y", "/etc//hostname"):
        with pytest.raises(ValueError):
            check_guest_path(bad)
    t = tarfile.open(fileobj=io.BytesIO(files_tar({"/srv/app/a.txt": b"hello"})))
    names = {m.name: m for m in t.getmembers()}
    assert sorted(names) == ["srv", "srv/app", "srv/app/a.txt"]
    assert names["srv/app/a.txt"].mode == 0o644 and names["srv/app/a.txt"].uid == 0
    assert t.extractfile("srv/app/a.txt").read() == b"hello"
