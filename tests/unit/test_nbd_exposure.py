"""`ovault mount`'s NBD export is never exposed beyond this machine's user:
a unix socket is 0600 from the moment it exists, a TCP listener is loopback
only, and a non-socket file at the socket path is never removed."""
from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from imageio_ext.nbd.server import check_loopback, serve_disk

READER = SimpleNamespace(size=1 << 20)  # start/close never read


async def test_unix_socket_is_0600_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        export = await serve_disk(READER, unix_path=str(tmp_path / "d.sock"))
    finally:
        os.umask(old)
    try:
        st = os.lstat(tmp_path / "d.sock")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert export.url == f"nbd+unix:///?socket={tmp_path / 'd.sock'}"
        assert os.umask(old) == old  # the process umask is restored
    finally:
        await export.close()


async def test_a_regular_file_at_the_socket_path_is_not_removed(tmp_path):
    victim = tmp_path / "important"
    victim.write_text("keep me")
    with pytest.raises(OSError):
        await serve_disk(READER, unix_path=str(victim))
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.com"])
async def test_tcp_is_refused_off_loopback(host):
    with pytest.raises(ValueError, match="loopback only"):
        await serve_disk(READER, host=host, port=0)


async def test_tcp_on_loopback_when_asked():
    for h in ("127.0.0.1", "::1", "localhost"):
        check_loopback(h)
    export = await serve_disk(READER, host="127.0.0.1", port=0)
    try:
        assert export.url.startswith("nbd://127.0.0.1:")
    finally:
        await export.close()
