"""Small synchronous helpers for tests that drive the sandbox."""
from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path


class Sandbox:
    def __init__(self, info: dict, dir: Path):
        self.info, self.dir = info, dir
        e = info["engine"]
        self.ssl = ssl.create_default_context(cafile=e["ca_file"])

    @property
    def engine(self) -> dict:
        return self.info["engine"]

    def vm(self, name: str) -> dict:
        return next(v for v in self.info["vms"] if v["name"] == name)

    def connect(self):
        import ovirtsdk4 as sdk
        e = self.engine
        return sdk.Connection(url=e["api"], username=e["username"], password=e["password"],
                              ca_file=e["ca_file"])

    def admin(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.info["admin_url"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=120) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"admin {method} {path}: {e.code} {e.read()[:300]!r}") from None

    def write(self, vm_id: str, offset: int, length: int, pattern=0xab, disk_id=None, seed=None):
        body = {"offset": offset, "length": length, "pattern": pattern}
        if disk_id:
            body["disk_id"] = disk_id
        if seed is not None:
            body["seed"] = seed
        return self.admin("POST", f"/vms/{vm_id}/writes", body)

    def digest(self, disk_id: str, snapshot: str | None = None) -> str:
        q = f"?snapshot={snapshot}" if snapshot else ""
        return self.admin("GET", f"/disks/{disk_id}/digest{q}")["sha256"]

    def leftovers(self) -> dict:
        return self.admin("GET", "/leftovers")

    def fault(self, **kw):
        return self.admin("POST", "/faults", kw)

    def clear_faults(self):
        return self.admin("DELETE", "/faults")


def image_digest(path: Path, fmt: str = "qcow2") -> str:
    """SHA-256 of an image's guest-visible content (follows backing files)."""
    raw = Path(str(path) + ".digest.raw")
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(raw)],
                   check=True, cwd=Path(path).parent)
    h = hashlib.sha256()
    with open(raw, "rb") as f:
        while b := f.read(8 << 20):
            h.update(b)
    raw.unlink()
    return h.hexdigest()


def allocated_ranges(path: Path) -> list[tuple[int, int]]:
    """Data ranges stored in this qcow2 layer itself (not its backing chain)."""
    out = subprocess.run(["qemu-img", "map", "--output=json", str(path)], check=True,
                         capture_output=True, text=True, cwd=Path(path).parent).stdout
    ranges = []
    for m in json.loads(out):
        if m.get("depth") == 0 and m.get("data"):
            if ranges and ranges[-1][1] == m["start"]:
                ranges[-1] = (ranges[-1][0], m["start"] + m["length"])
            else:
                ranges.append((m["start"], m["start"] + m["length"]))
    return ranges


def wait(pred, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
