"""The libguestfs worker: one process per browse session.

Why a process: libguestfs' Python binding holds the GIL for the whole of each
call (a launch takes 10-40 s under TCG), which would stop the orchestrator's
event loop — including the NBD export the appliance is reading through. In its
own process the handle blocks only itself, and a crash or a hostile file
system takes down one session, not the service.

Protocol on stdin/stdout, one request at a time: frames of one kind byte, a
4-byte big-endian length and a payload. ``J`` is JSON, ``B`` raw bytes.
Start-up answers one ``J`` frame (``{"ok": true, "result": {...}}`` with the
file systems, or ``{"ok": false, "error": {"code", "message"}}``). A request is
``J {"op", "args"}``; ``read`` answers one ``B`` frame; ``tar`` streams ``B``
frames then one ``J`` frame; the others answer one ``J`` frame.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .protocol import HEADER
CHUNK = 256 << 10


class Channel:
    def __init__(self, rfile, wfile):
        self.r, self.w = rfile, wfile

    def send(self, kind: bytes, payload: bytes) -> None:
        self.w.write(HEADER.pack(kind, len(payload)))
        self.w.write(payload)
        self.w.flush()

    def send_json(self, doc) -> None:
        self.send(b"J", json.dumps(doc).encode())

    def recv(self):
        head = self.r.read(HEADER.size)
        if len(head) < HEADER.size:
            return None, None
        kind, n = HEADER.unpack(head)
        data = self.r.read(n)
        return kind, data


class _FrameSink:
    """tarfile's output as ``B`` frames of up to 256 KiB."""

    def __init__(self, ch: Channel):
        self.ch, self.buf = ch, bytearray()

    def write(self, data) -> int:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            self.ch.send(b"B", bytes(self.buf))
            self.buf = bytearray()


def _error(e: BaseException) -> dict:
    from ..errors import OvaultError
    if isinstance(e, OvaultError):
        return e.to_dict()
    if isinstance(e, RuntimeError):  # libguestfs: its first line names the call and the errno text
        return {"code": "invalid", "message": str(e).splitlines()[0][:500]}
    return {"code": "error", "message": f"{type(e).__name__}: {str(e)[:300]}"}


def serve(ch: Channel, gfs) -> None:
    ops = {"list": gfs.list, "stat_file": gfs.stat_file, "walk": gfs.walk,
           "check": lambda paths: [gfs.check_no_links(gfs.resolve(p), p) for p in paths] and None}
    while True:
        kind, data = ch.recv()
        if kind is None:
            return
        req = json.loads(data)
        op, args = req.get("op"), req.get("args") or []
        if op == "close":
            ch.send_json({"ok": True, "result": None})
            return
        try:
            if op == "read":
                ch.send(b"B", gfs.read(*args))
                continue
            if op == "tar":
                sink = _FrameSink(ch)
                n = gfs.write_tar(args[0], sink, args[1])
                sink.flush()
                ch.send_json({"ok": True, "result": n})
                continue
            ch.send_json({"ok": True, "result": ops[op](*args)})
        except Exception as e:  # noqa: BLE001 - every failure is answered, the worker goes on
            ch.send_json({"ok": False, "error": _error(e)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ovault-files-worker")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--accel", default="auto")
    ap.add_argument("--memsize", type=int, default=512)
    ap.add_argument("--cache-dir", default="")
    a = ap.parse_args(argv)
    # The protocol owns the original stdout; anything else printed (libguestfs,
    # logs) goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    ch = Channel(sys.stdin.buffer, out)
    from .guest import GuestFs
    try:
        gfs = GuestFs.launch(a.socket, accel=a.accel, memsize_mib=a.memsize, cache_dir=a.cache_dir or None)
    except Exception as e:  # noqa: BLE001
        ch.send_json({"ok": False, "error": _error(e)})
        return 1
    ch.send_json({"ok": True, "result": {"mounts": gfs.mounts, "fstypes": gfs.fstypes, "sizes": gfs.sizes,
                                         "failed": gfs.failed}})
    try:
        serve(ch, gfs)
    finally:
        gfs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
