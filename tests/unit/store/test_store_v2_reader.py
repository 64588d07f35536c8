"""docs/store-format.md is enough to write a reader: an encrypted version-2 store
restored by a reader written from the document alone (cryptography, blake3 and
zstandard; nothing from imageio_ext.store but the writer that made the store)."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from pathlib import Path

import blake3
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imageio_ext.store import Store, StoreKey
from tests.unit.store.store_suite import CS, backup, make_disk, uid


def hkdf(key: bytes, label: str, n: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=label.encode()).derive(key)


def independent_restore(root: Path, secret: bytes, vm: str, bid: str, disk: str) -> bytes:
    cfg = json.loads((root / "ovault-store.json").read_text())
    assert cfg["version"] == 2 and cfg["encryption"] == "aes-256-gcm" and cfg["digest"] == "blake3-keyed"
    k_d, k_c, k_m = (hkdf(secret, f"ovault-store-v2 {x}") for x in ("digest", "chunk", "meta"))
    assert hkdf(secret, "ovault-store-v2 fingerprint", 16).hex() == cfg["key_fingerprint"]
    sid = uuid.UUID(cfg["store_id"]).bytes

    def unseal(rel: str, kind: str) -> bytes:
        blob = (root / rel).read_bytes()
        assert blob[:8] == b"OVLTSEAL"
        ad = b"ovault-meta\0" + sid + kind.encode() + b"\0" + rel.encode()
        return AESGCM(k_m).decrypt(blob[8:20], blob[20:], ad)

    man = json.loads(unseal(f"vms/{vm}/{bid}/manifest.json", "manifest"))
    assert man["version"] == 2
    d = next(x for x in man["disks"] if x["disk_id"] == disk)
    irel = f"vms/{vm}/{bid}/{d['index']}"
    assert hashlib.sha256((root / irel).read_bytes()).hexdigest() == d["index_sha256"]
    idx = unseal(irel, "index")
    magic, version, _, _, size, cs, _, csum = struct.unpack("<8sII16sQQq32s", idx[:88])
    assert (magic, version) == (b"OVLTFIDX", 2) and hashlib.sha256(idx[4096:]).digest() == csum
    out = bytearray()
    for i in range((size + cs - 1) // cs):
        dg = idx[4096 + 32 * i : 4096 + 32 * (i + 1)]
        n = min(cs, size - i * cs)
        if dg == bytes(32):
            out += bytes(n)
            continue
        h = dg.hex()
        blob = (root / "chunks" / h[:2] / h[2:4] / h).read_bytes()
        cmagic, flags, _, length = struct.unpack("<4sB3sI", blob[:12])
        assert cmagic == b"OVC2" and flags & 2 and length == n
        ad = b"ovault-chunk\0" + sid + dg + blob[:12]
        payload = AESGCM(k_c).decrypt(blob[12:24], blob[24:], ad)
        data = zstandard.ZstdDecompressor().decompress(payload) if flags & 1 else payload
        assert blake3.blake3(data, key=k_d).digest() == dg
        out += data
    return bytes(out)


async def test_an_independent_reader_restores_an_encrypted_store(store_url):
    key = StoreKey.generate()
    vm, bid, disk = uid(), uid(), uid()
    content = make_disk(21, 5.5, zero_slots=(1,), text_slots=(3,))
    async with await Store.open(store_url, create=True, chunk_size=CS, key=key, encrypt=True) as s:
        await backup(s, vm, bid, {disk: content})
    assert independent_restore(Path(store_url), key.secret, vm, bid, disk) == content
