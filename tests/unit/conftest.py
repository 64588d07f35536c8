"""The unit tier is hermetic: it starts no PostgreSQL, NFS server, qemu or
imageio daemon. This guard makes a unit test that tries fail at once, naming
the program, instead of slowing `./dev quick` down or needing root. A test in
this folder that truly needs one of them is marked `integration` (and so runs
in `./dev test` only).
"""
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

_REFUSED = {"postgres", "pg_ctl", "initdb", "pg_ctlcluster", "ganesha.nfsd", "rpcbind", "qemu-img", "qemu-nbd",
            "qemu-io", "qemu-system-x86_64", "ovirt-imageio", "nfs-cp"}


def _program(args) -> str:
    if isinstance(args, (str, bytes, os.PathLike)):
        first = os.fsdecode(args).split()[0] if os.fsdecode(args).strip() else ""
    else:
        first = os.fsdecode(list(args)[0]) if args else ""
    return os.path.basename(first)


@pytest.fixture(autouse=True)
def _hermetic(request, monkeypatch):
    if request.node.get_closest_marker("integration"):
        return
    real_popen_init = subprocess.Popen.__init__
    real_exec = asyncio.create_subprocess_exec

    def popen_init(self, args, *a, **kw):
        if _program(args) in _REFUSED:
            pytest.fail(f"unit test started {_program(args)!r}: move it to tests/integration or mark it integration")
        real_popen_init(self, args, *a, **kw)

    async def create_subprocess_exec(program, *args, **kw):
        if _program([program]) in _REFUSED:
            pytest.fail(f"unit test started {_program([program])!r}: move it to tests/integration or mark it integration")
        return await real_exec(program, *args, **kw)

    async def refused_connect(*a, **kw):
        pytest.fail("unit test connected to PostgreSQL: move it to tests/integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", popen_init)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", create_subprocess_exec)
    import asyncpg
    monkeypatch.setattr(asyncpg, "connect", refused_connect)
    monkeypatch.setattr(asyncpg, "create_pool", refused_connect)
