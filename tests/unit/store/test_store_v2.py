"""Store format version 2 (BLAKE3, AES-256-GCM) beside version 1 (docs/store-format.md)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import blake3
import pytest
import zstandard

from imageio_ext.store import (
    ChunkCorrupted,
    IncompatibleStore,
    IndexCorrupted,
    ManifestCorrupted,
    Store,
    StoreKey,
    StoreKeyInvalid,
    StoreKeyMissing,
    StoreKeyWrong,
)
from imageio_ext.store.chunk import ChunkCodec, raw_frame, worth_compressing
from imageio_ext.store.crypto import paper_export, paper_import, read_key_file, write_key_file
from imageio_ext.store.format import CHUNK_HEADER, FLAG_COMPRESSED, FLAG_ENCRYPTED, SEAL_MAGIC
from imageio_ext.store.layout import chunk_path
from tests.unit.store.store_suite import CS, backup, chunk_names, make_disk, read_all, sha, uid


async def _open(url, **kw) -> Store:
    return await Store.open(url, create=True, chunk_size=CS, **kw)


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def _chunk_files(root: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(os.path.join(root, "chunks")):
        out += [os.path.join(dirpath, f) for f in files if "." not in f]
    return sorted(out)


# -- version 1 stays version 1 ------------------------------------------------------


async def test_v1_store_read_verified_restored_gcd_and_still_written_as_v1(store_url):
    vm, b1, b2, disk = uid(), uid(), uid(), uid()
    content = make_disk(1, 6.5, zero_slots=(2,), text_slots=(4,))
    async with await _open(store_url, version=1) as s:  # today's v1 writer path
        await backup(s, vm, b1, {disk: content})
    changed = bytearray(content)
    changed[CS : CS + 10] = b"x" * 10
    async with await _open(store_url) as s:  # the new code, asked for the default (2): keeps 1
        assert s.config.version == 1 and json.loads(await s.target.read_file("ovault-store.json"))["version"] == 1
        assert await read_all(s, vm, b1, disk) == content
        assert (await s.verify(vm, b1)).ok
        await backup(s, vm, b2, {disk: bytes(changed)}, parent=b1, only={disk: {1}})
        assert await read_all(s, vm, b2, disk) == bytes(changed)
        for p in _chunk_files(store_url):  # every chunk a SHA-256-named zstd frame
            data = zstandard.ZstdDecompressor().decompress(Path(p).read_bytes())
            assert sha(data) == os.path.basename(p)
        raw = await s.target.read_file(f"vms/{vm}/{b2}/{disk}.fidx")
        assert struct.unpack_from("<I", raw, 8)[0] == 1
        assert json.loads(await s.target.read_file(f"vms/{vm}/{b2}/manifest.json"))["version"] == 1
        await s.delete_backup(vm, b1)
        rep = await s.gc(grace_seconds=0)
        assert rep.chunks_removed == 1  # b1's chunk 1, replaced in b2
        assert (await s.verify(vm, b2)).ok and await read_all(s, vm, b2, disk) == bytes(changed)


def test_v1_raw_frame_for_incompressible_chunks_is_plain_zstd():
    codec = ChunkCodec(CS)
    noise = os.urandom(CS)
    blob = codec.encode(b"", noise)
    assert len(blob) < CS + 64  # raw blocks: header only
    assert zstandard.ZstdDecompressor().decompress(blob) == noise
    assert zstandard.frame_content_size(blob) == CS
    text = (b"ovault " * CS)[:CS]
    assert len(codec.encode(b"", text)) < CS // 10
    assert not worth_compressing(noise, codec.compress) and worth_compressing(text, codec.compress)
    for n in (1, 4096, 131072, 131073):
        d = os.urandom(n)
        assert zstandard.ZstdDecompressor().decompress(raw_frame(d)) == d


# -- version 2 ---------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True])
async def test_v2_full_and_incremental_round_trip(store_url, encrypted):
    key = StoreKey.generate() if encrypted else None
    vm, b1, b2, d1, d2 = uid(), uid(), uid(), uid(), uid()
    a = make_disk(2, 7.3, zero_slots=(1,), text_slots=(3,))
    b = make_disk(3, 2)
    async with await _open(store_url, key=key, encrypt=encrypted) as s:
        doc = json.loads(await s.target.read_file("ovault-store.json"))
        assert doc["version"] == 2 and doc["digest"] == ("blake3-keyed" if encrypted else "blake3")
        assert doc["encryption"] == ("aes-256-gcm" if encrypted else "none")
        assert doc["key_fingerprint"] == (key.fingerprint if key else None)
        await backup(s, vm, b1, {d1: a, d2: b})
        a2 = bytearray(a)
        a2[5 * CS + 7 : 5 * CS + 99] = b"\xff" * 92
        a2 += make_disk(4, 1.5)  # the disk grew
        await backup(s, vm, b2, {d1: bytes(a2), d2: b}, parent=b1, only={d1: {5, 7, 8}, d2: set()})
        assert await read_all(s, vm, b1, d1) == a and await read_all(s, vm, b1, d2) == b
        assert await read_all(s, vm, b2, d1) == bytes(a2) and await read_all(s, vm, b2, d2) == b
        assert (await s.verify(vm, b1)).ok and (await s.verify(vm, b2)).ok
        names = await chunk_names(s)
        if not encrypted:  # plain BLAKE3 of the plaintext
            assert blake3.blake3(a[:CS]).hexdigest() in names
        else:
            assert blake3.blake3(a[:CS], key=key.digest_key).hexdigest() in names
            assert blake3.blake3(a[:CS]).hexdigest() not in names
        for p in _chunk_files(store_url):
            magic, flags, _, n = CHUNK_HEADER.unpack_from(Path(p).read_bytes())
            assert magic == b"OVC2" and bool(flags & FLAG_ENCRYPTED) == encrypted and 0 < n <= CS
        raw_manifest = await s.target.read_file(f"vms/{vm}/{b2}/manifest.json")
        raw_index = await s.target.read_file(f"vms/{vm}/{b2}/{d1}.fidx")
        if encrypted:
            assert raw_manifest.startswith(SEAL_MAGIC) and raw_index.startswith(SEAL_MAGIC)
            assert vm.encode() not in raw_manifest
        else:
            assert json.loads(raw_manifest)["version"] == 2 and struct.unpack_from("<I", raw_index, 8)[0] == 2
        info = await s.get_backup(vm, b2)
        assert info.disk(d1).index_sha256 == sha(raw_index)  # the file as stored
        # dedup inside the store: d2 unchanged wrote nothing new
        assert info.disk(d2).new_chunks == 0
        await s.delete_backup(vm, b1)
        rep = await s.gc(grace_seconds=0)
        assert rep.chunks_removed == 2  # b1's slot 5 of d1 and its short last chunk (the disk grew)
        assert await read_all(s, vm, b2, d1) == bytes(a2)


async def test_v2_incompressible_chunks_stored_uncompressed(store_url):
    async with await _open(store_url) as s:
        noise, text = os.urandom(CS), (b"abc" * CS)[:CS]
        for data in (noise, text):
            dg = await s.put_chunk(data)
            blob = await s.target.read_file(chunk_path(dg))
            _, flags, _, n = CHUNK_HEADER.unpack_from(blob)
            assert n == CS
            assert bool(flags & FLAG_COMPRESSED) == (data is text)
            assert await s.chunks.read_chunk(dg, CS) == data


async def test_encrypted_store_detects_flipped_bits_everywhere(store_url):
    key = StoreKey.generate()
    vm, bid, disk = uid(), uid(), uid()
    content = make_disk(5, 3)
    async with await _open(store_url, key=key, encrypt=True) as s:
        await backup(s, vm, bid, {disk: content})
    files = _chunk_files(store_url)
    _flip(files[0], CHUNK_HEADER.size + 40)  # inside the ciphertext
    _flip(files[1], 4)  # the flags in the header (associated data)
    async with await Store.open(store_url, key=key) as s:
        rep = await s.verify(vm, bid)
        assert len(rep.damaged) == 2 and all("authentication failed" in d.reason for d in rep.damaged)
    mdir = os.path.join(store_url, "vms", vm, bid)
    _flip(os.path.join(mdir, f"{disk}.fidx"), 200)
    async with await Store.open(store_url, key=key) as s:
        # The manifest's SHA-256 of the index file catches it first; with the
        # manifest's digest matching (rewritten), the AEAD still does:
        with pytest.raises(IndexCorrupted, match="SHA-256"):
            await s.open_disk(vm, bid, disk)
        with pytest.raises(IndexCorrupted, match="authentication failed"):
            await s.backups.read_index(vm, bid, disk)
    _flip(os.path.join(mdir, "manifest.json"), 100)
    async with await Store.open(store_url, key=key) as s:
        with pytest.raises(ManifestCorrupted, match="authentication failed"):
            await s.get_backup(vm, bid)


async def test_encrypted_objects_cannot_be_swapped(store_url):
    key = StoreKey.generate()
    vm, b1, b2, disk = uid(), uid(), uid(), uid()
    async with await _open(store_url, key=key, encrypt=True) as s:
        await backup(s, vm, b1, {disk: make_disk(6, 2)})
        await backup(s, vm, b2, {disk: make_disk(7, 2)})
        d1, d2 = os.path.join(store_url, "vms", vm, b1), os.path.join(store_url, "vms", vm, b2)
        shutil.copy(os.path.join(d1, "manifest.json"), os.path.join(d2, "manifest.json"))
        with pytest.raises(ManifestCorrupted, match="authentication failed"):
            await s.get_backup(vm, b2)
        # a chunk file renamed to another chunk's name
        f = _chunk_files(store_url)
        shutil.copy(f[0], f[1])
        dg = bytes.fromhex(os.path.basename(f[1]))
        with pytest.raises(ChunkCorrupted, match="authentication failed"):
            await s.chunks.read_chunk(dg)


async def test_wrong_or_missing_key_is_named(store_url):
    key, other = StoreKey.generate(), StoreKey.generate()
    vm, bid, disk = uid(), uid(), uid()
    content = make_disk(8, 2)
    async with await _open(store_url, key=key, encrypt=True) as s:
        await backup(s, vm, bid, {disk: content})
    with pytest.raises(StoreKeyWrong) as e:
        await Store.open(store_url, key=other)
    assert key.fingerprint in str(e.value) and other.fingerprint in str(e.value)
    async with await Store.open(store_url) as s:  # no key: opening works, data does not
        for call in (lambda: s.get_backup(vm, bid), lambda: s.verify(vm, bid), lambda: s.gc(0),
                     lambda: read_all(s, vm, bid, disk), lambda: s.put_chunk(b"x" * 100)):
            with pytest.raises(StoreKeyMissing, match=f"encrypted \\(key fingerprint {key.fingerprint}\\)"):
                await call()
        s.set_key(key)  # the mover's way: the key arrives with the job
        assert await read_all(s, vm, bid, disk) == content
    with pytest.raises(IncompatibleStore, match="is encrypted"):
        await _open(store_url)  # create without a key over an encrypted store


async def test_chunk_names_differ_between_keys_for_same_data(tmp_path):
    content = make_disk(9, 4)
    names = []
    for n in range(2):
        url = str(tmp_path / f"t{n}")
        os.mkdir(url)
        async with await _open(url, key=StoreKey.generate(), encrypt=True) as s:
            await backup(s, uid(), uid(), {uid(): content, uid(): content})  # two identical disks
            names.append(await chunk_names(s))
    # dedup inside each store (4 chunks for 8 slots), nothing shared between them
    assert len(names[0]) == 4 and len(names[1]) == 4 and not names[0] & names[1]


async def test_mixed_and_unknown_versions_refused(tmp_path):
    v1, v2 = str(tmp_path / "v1"), str(tmp_path / "v2")
    os.mkdir(v1), os.mkdir(v2)
    vm = uid()
    async with await _open(v1, version=1) as s:
        await backup(s, vm, uid(), {uid(): make_disk(10, 1)})
    async with await _open(v2) as s:
        await backup(s, vm, uid(), {uid(): make_disk(11, 1)})
    # the v1 store's config replaced by the v2 one: its chunks give it away
    cfg1 = Path(v1, "ovault-store.json").read_bytes()
    shutil.copy(os.path.join(v2, "ovault-store.json"), os.path.join(v1, "ovault-store.json"))
    with pytest.raises(IncompatibleStore, match="version-1 chunks.*mixed format versions"):
        await Store.open(v1)
    Path(v1, "ovault-store.json").write_bytes(cfg1)
    async with await Store.open(v1) as s:
        assert s.config.version == 1
    # no config at all but data: unknown version, never initialised over
    os.remove(os.path.join(v2, "ovault-store.json"))
    with pytest.raises(IncompatibleStore, match="no ovault-store.json: unknown format version"):
        await _open(v2)
    # a version this code does not know
    doc = json.loads(cfg1)
    doc["version"] = 3
    Path(v1, "ovault-store.json").write_text(json.dumps(doc))
    with pytest.raises(IncompatibleStore, match="store version 3"):
        await Store.open(v1)


# -- keys ----------------------------------------------------------------------


def test_paper_export_import_round_trip():
    key = StoreKey.generate()
    paper = paper_export(key)
    assert key.hex() not in paper and key.fingerprint in paper
    lines = paper.splitlines()
    assert lines[0] == "ovault store key" and len(lines) == 2 + 4
    assert paper_import(paper, key.fingerprint) == key
    sloppy = "\n".join(lines[:2] + [ln.lower().replace("o", "0").replace(" ", "  ") for ln in lines[2:]])
    assert paper_import(sloppy, key.fingerprint) == key  # forgiving transcription
    assert paper_import(key.hex(), key.fingerprint) == key
    body = lines[3].split(": ")[1]
    typo = body[:2] + ("A" if body[2] != "A" else "B") + body[3:]
    with pytest.raises(StoreKeyInvalid, match="line 2 does not match its checksum"):
        paper_import("\n".join(lines[:3] + [f"2: {typo}"] + lines[4:]))
    with pytest.raises(StoreKeyInvalid, match="line 3 is missing"):
        paper_import("\n".join(lines[:4] + lines[5:]))
    with pytest.raises(StoreKeyInvalid, match="is not the store's key"):
        paper_import(paper, StoreKey.generate().fingerprint)


def test_key_file_is_0600_and_refused_when_readable_by_others(tmp_path):
    key = StoreKey.generate()
    p = tmp_path / "keys" / "default.key"
    write_key_file(p, key)
    assert os.stat(p).st_mode & 0o777 == 0o600 and read_key_file(p) == key
    assert key.hex() not in repr(key)
    with pytest.raises(StoreKeyInvalid, match="exists"):
        write_key_file(p, StoreKey.generate())
    os.chmod(p, 0o644)
    with pytest.raises(StoreKeyInvalid, match="must be 0600"):
        read_key_file(p)


async def test_encrypted_damaged_chunk_set_aside_and_healed_by_next_backup(store_url):
    key = StoreKey.generate()
    vm, b1, b2, disk = uid(), uid(), uid(), uid()
    content = make_disk(12, 3)
    async with await _open(store_url, key=key, encrypt=True) as s:
        await backup(s, vm, b1, {disk: content})
        victim = _chunk_files(store_url)[0]
        _flip(victim, os.path.getsize(victim) - 1)  # the tag
        rep = await s.verify(vm, b1)
        assert len(rep.damaged) == 1 and rep.damaged[0].set_aside == [
            os.path.relpath(victim, store_url) + ".0.bad"]
        assert not os.path.exists(victim)
        await backup(s, vm, b2, {disk: content})  # the same content: the chunk is written again
        assert os.path.exists(victim)
        assert (await s.verify(vm, b1)).ok and await read_all(s, vm, b1, disk) == content
        assert (await s.gc(grace_seconds=0)).bad_removed == 1
