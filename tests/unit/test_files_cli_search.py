"""`ovault files search`: waits for the indexing its search started (unless --no-wait),
then searches again and prints every version; over a fake API."""
from __future__ import annotations

import argparse

from orchestrator.cli import files as cli

URL = "/api/v1/vms/vm-1/files"
HIT = {"path": "/sda1/etc/app.conf", "disk_id": "d1", "disk_alias": "boot",
       "versions": [{"backup_id": "b2", "created_at": "2024-01-02T00:00:00Z", "type": "file", "size": 12,
                     "mtime": "2023-11-17T22:13:23Z"}]}


class FakeApi:
    def __init__(self, progress):
        self.progress = list(progress)  # the indexing resource's answers, in turn
        self.calls = []
        self.indexed = False

    async def resolve_vms(self, names):
        return ["vm-1"]

    async def req(self, method, url, params=None):
        self.calls.append((method, url))
        if url == URL:
            if self.indexed:
                return {"items": [HIT], "backups_searched": 2, "truncated": False, "complete": True,
                        "not_indexed": [], "indexing": None}
            return {"items": [], "backups_searched": 2, "truncated": False, "complete": False,
                    "not_indexed": [{"backup_id": "b2", "disk_id": "d1", "disk_alias": "boot", "state": "queued"}],
                    "indexing": {"state": "running", "done": 0, "total": 1, "failed": 0, "url": URL + "/indexing"}}
        st = self.progress.pop(0)
        self.indexed = st["state"] == "done"
        return st


def args(**kw):
    return argparse.Namespace(vm="web", name="app.conf", json=False, no_wait=False, poll=0.0, **kw)


def prog(state, done):
    return {"state": state, "done": done, "total": 1, "failed": [], "pending": []}


async def test_waits_for_the_indexing_then_prints_the_versions(capsys):
    api = FakeApi([prog("running", 0), prog("running", 0), prog("done", 1)])
    assert await cli.search(api, args()) == 0
    assert api.calls == [("GET", URL)] + [("GET", URL + "/indexing")] * 3 + [("GET", URL)]
    out = capsys.readouterr()
    assert "/sda1/etc/app.conf  (disk boot)" in out.out and "backup b2" in out.out and "12" in out.out
    assert "not searched" not in out.err


async def test_no_wait_prints_what_is_known_and_names_the_disks_left(capsys):
    api = FakeApi([])
    a = args()
    a.no_wait = True
    assert await cli.search(api, a) == 0
    assert api.calls == [("GET", URL)]
    out = capsys.readouterr()
    assert "no file matching 'app.conf' in the last 2 backups indexed so far" in out.out
    assert "1 backup disk(s) not searched: not indexed yet" in out.err


def test_failed_disks_are_named(capsys):
    cli.print_search({"items": [], "backups_searched": 1, "truncated": False, "complete": False,
                      "not_indexed": [{"backup_id": "b1", "disk_id": "d1", "disk_alias": None, "state": "failed",
                                       "error": "no kernel"}]}, "x")
    err = capsys.readouterr().err
    assert "1 failed" in err and "backup b1 disk d1: no kernel" in err
