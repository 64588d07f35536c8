"""Per-chunk CPU cost of the store formats: digest + encode (write) and decode +
verify (read) of one chunk, single thread, best of several rounds.

    .venv/bin/python -m bench.store_codec [--chunk-mib 4] [--rounds 6]

Compares version 1 (SHA-256 + zstd), version 2 (BLAKE3 + zstd) and version 2
encrypted (keyed BLAKE3 + zstd + AES-256-GCM) on random (incompressible),
half-zero and text-like chunks (docs/performance.md, docs/store-format.md).
"""
from __future__ import annotations

import argparse
import os
import random
import time
import uuid

from imageio_ext.store.chunk import ChunkCodec
from imageio_ext.store.crypto import StoreKey
from imageio_ext.store.format import ChunkCodecV2


def samples(cs: int) -> dict[str, bytes]:
    r = random.Random(1)
    words = [bytes(r.choice(b"abcdefghij") for _ in range(6)) for _ in range(500)]
    return {
        "random": os.urandom(cs),
        "half-zero": (os.urandom(cs // 8) + bytes(cs // 8)) * 4,
        "text": b" ".join(r.choice(words) for _ in range(cs // 6))[:cs],
    }


def codecs(cs: int) -> dict[str, object]:
    key = StoreKey.generate()
    return {
        "v1 sha256+zstd": ChunkCodec(cs),
        "v2 blake3+zstd": ChunkCodecV2(cs, 1, store_id=uuid.uuid4().bytes, encrypted=False, key=None,
                                       url="bench", fingerprint=None),
        "v2 encrypted": ChunkCodecV2(cs, 1, store_id=uuid.uuid4().bytes, encrypted=True, key=key,
                                     url="bench", fingerprint=key.fingerprint),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk-mib", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=4)
    a = ap.parse_args()
    cs = a.chunk_mib << 20
    data, cods = samples(cs), codecs(cs)
    best: dict[tuple[str, str], tuple[float, float, float]] = {}
    for _ in range(a.rounds):  # interleaved rounds: a busy machine hurts all alike
        for dname, d in data.items():
            for cname, c in cods.items():
                t = time.perf_counter()
                for _ in range(a.per_round):
                    dg = c.digest(d)
                    blob = c.encode(dg, d)
                tw = (time.perf_counter() - t) / a.per_round
                t = time.perf_counter()
                for _ in range(a.per_round):
                    c.decode(dg, blob)
                tr = (time.perf_counter() - t) / a.per_round
                w, r, _ = best.get((dname, cname), (1e9, 1e9, 0))
                best[(dname, cname)] = (min(w, tw), min(r, tr), len(blob) / cs)
    print(f"chunk {a.chunk_mib} MiB, one thread, best of {a.rounds} rounds")
    for (dname, cname), (tw, tr, ratio) in best.items():
        print(f"{dname:9s} {cname:16s} write {tw * 1e3:5.1f} ms ({cs / tw / 2**20:5.0f} MiB/s)  "
              f"read {tr * 1e3:5.1f} ms ({cs / tr / 2**20:5.0f} MiB/s)  stored {ratio:.2f}")


if __name__ == "__main__":
    main()
