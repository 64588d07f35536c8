"""Durability order of a local target's writes, recorded at the os-call level.

A chunk must never be visible under its digest name before its bytes are on
stable storage (a later backup deduplicates against any name that exists), and
every directory on its path must be durable in its parent before the chunk is
renamed into it (a crash must not lose a chunk an index already names).
"""

from __future__ import annotations

import os

import pytest

from imageio_ext.store import Store
from imageio_ext.store import path_target
from imageio_ext.store.crypto import StoreKey
from imageio_ext.store.layout import chunk_path


class _Recorder:
    """Wraps the os calls PathTarget makes and records them in order, with the
    directory or file each descriptor was opened on."""

    def __init__(self, monkeypatch):
        self.events: list[tuple] = []
        self.names: dict[int, str] = {}
        real = {n: getattr(os, n) for n in ("open", "close", "mkdir", "write", "fsync", "rename")}

        def open_(path, flags, mode=0o777, *, dir_fd=None):
            fd = real["open"](path, flags, mode, dir_fd=dir_fd)
            base = self.names.get(dir_fd, "") if dir_fd is not None else ""
            self.names[fd] = f"{base}/{path}" if dir_fd is not None else ""
            return fd

        def mkdir(path, mode=0o777, *, dir_fd=None):
            real["mkdir"](path, mode, dir_fd=dir_fd)
            self.events.append(("mkdir", f"{self.names.get(dir_fd, '')}/{path}"))

        def write(fd, data):
            self.events.append(("write", self.names[fd]))
            return real["write"](fd, data)

        def fsync(fd):
            self.events.append(("fsync", self.names[fd]))
            return real["fsync"](fd)

        def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            real["rename"](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            self.events.append(("rename", f"{self.names[src_dir_fd]}/{src}", f"{self.names[dst_dir_fd]}/{dst}"))

        for name, fn in (("open", open_), ("mkdir", mkdir), ("write", write), ("fsync", fsync), ("rename", rename)):
            monkeypatch.setattr(path_target.os, name, fn)

    def index(self, pred) -> int:
        return next(i for i, e in enumerate(self.events) if pred(e))


@pytest.fixture
async def store(tmp_path):
    (tmp_path / "t").mkdir()
    st = await Store.open(tmp_path / "t", create=True, chunk_size=1 << 20)
    yield st
    await st.close()


async def test_a_new_chunk_is_synced_before_its_rename_and_its_directories_before_it(store, monkeypatch):
    rec = _Recorder(monkeypatch)
    data = os.urandom(1 << 20)
    res = await store.chunks.put(data)
    assert res.new
    final = chunk_path(res.digest)  # chunks/ab/cd/<hex>
    ab, cd = final.split("/")[1:3]
    ev = rec.events
    rename = rec.index(lambda e: e[0] == "rename")
    tmp = ev[rename][1]
    assert ev[rename][2] == f"/chunks/{ab}/{cd}/{final.rsplit('/', 1)[1]}"
    assert "/." in tmp and ".tmp." in tmp  # written under a temporary name in the same directory
    # every byte written to the temporary file, then fsynced, all before the rename
    writes = [i for i, e in enumerate(ev) if e == ("write", tmp)]
    synced = rec.index(lambda e: e == ("fsync", tmp))
    assert writes and max(writes) < synced < rename
    # the chunk's directories were made now (fresh store) and each fsynced into its parent first
    mk_ab = rec.index(lambda e: e == ("mkdir", f"/chunks/{ab}"))
    mk_cd = rec.index(lambda e: e == ("mkdir", f"/chunks/{ab}/{cd}"))
    assert ev[mk_ab + 1] == ("fsync", "/chunks") and ev[mk_cd + 1] == ("fsync", f"/chunks/{ab}")
    assert mk_cd < rename
    # and the directory holding the new name is fsynced after the rename
    assert rec.index(lambda e: e == ("fsync", f"/chunks/{ab}/{cd}") ) > rename
    assert await store.get_chunk(res.digest, len(data)) == data


async def test_a_deduplicated_chunk_is_neither_written_nor_renamed(store, monkeypatch):
    data = os.urandom(1 << 20)
    first = await store.chunks.put(data)
    rec = _Recorder(monkeypatch)
    again = await store.chunks.put(bytes(data))
    assert first.new and not again.new and again.digest == first.digest
    assert not [e for e in rec.events if e[0] in ("write", "rename", "mkdir")]


@pytest.mark.parametrize("version,encrypt", [(1, False), (2, False), (2, True)])
async def test_chunks_of_one_write_are_views_and_stored_intact(tmp_path, version, encrypt):
    """A 4-chunk write is split into views of its buffer; each chunk (raw or
    compressed, sealed or not, either format) is stored and reads back as its
    own slice."""
    key = StoreKey.generate() if encrypt else None
    st = await Store.open(tmp_path, create=True, chunk_size=1 << 20, key=key, encrypt=encrypt, version=version)
    try:
        text = b"".join(b"line %d of a text-like chunk\n" % i for i in range(80000))[: 2 << 20]
        data = os.urandom(2 << 20) + text
        async with await st.begin_backup("11111111-1111-4111-8111-111111111111",
                                         "22222222-2222-4222-8222-222222222222") as bw:
            dw = await bw.add_disk("33333333-3333-4333-8333-333333333333", len(data))
            await dw.write(0, data)
            await dw.commit()
            await bw.publish()
        assert dw.new_chunks == 4 and dw.new_bytes < len(data) - (1 << 20)  # the text compressed
        for i in range(4):
            assert await st.get_chunk(dw.index.get(i), 1 << 20) == data[i << 20:(i + 1) << 20]
    finally:
        await st.close()


def test_temporary_names_are_unique_and_differ_in_a_forked_child():
    from imageio_ext.store.target import is_tmp_name, tmp_name

    names = {tmp_name("chunks/ab/cd/x") for _ in range(10000)}
    assert len(names) == 10000
    assert all(n.startswith("chunks/ab/cd/.x.tmp.") and is_tmp_name(n.rsplit("/", 1)[1]) for n in names)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's first name, sent to the parent
        os.write(w, tmp_name("chunks/ab/cd/x").encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = os.read(r, 200).decode()
    os.close(r)
    mine = tmp_name("chunks/ab/cd/x")
    assert child != mine and child.rsplit(".", 1)[1][:8] != mine.rsplit(".", 1)[1][:8]


def test_space_counts_from_a_hostile_server_are_clamped():
    from imageio_ext.store.target import Space
    ok = Space.of(blocks=100, bfree=40, bavail=30, frsize=4096)
    assert (ok.capacity, ok.used, ok.free) == (409600, 245760, 122880)
    # more free than blocks, available above capacity, no fragment size: clamped, bsize used
    bad = Space.of(blocks=10, bfree=50, bavail=99, frsize=0, bsize=512)
    assert (bad.capacity, bad.used, bad.free) == (5120, 0, 5120)
    # negative-looking or zero-sized answers never give negative bytes
    zero = Space.of(blocks=-5, bfree=3, bavail=-1, frsize=0, bsize=0)
    assert (zero.capacity, zero.used, zero.free) == (0, 0, 0)
