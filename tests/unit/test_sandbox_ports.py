"""Ports the sandbox hands to daemons started side by side are never the same."""
from __future__ import annotations

import socket

from sandbox import hosts


def test_free_port_never_repeats_even_when_the_kernel_offers_the_same_port(monkeypatch):
    offered = iter([40001, 40001, 40001, 40002, 40001, 40003])

    class FakeSocket:
        def __init__(self, *a):
            self.port = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, addr):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(hosts, "_given", set())
    monkeypatch.setattr(hosts.socket, "socket", FakeSocket)
    assert [hosts.free_port() for _ in range(3)] == [40001, 40002, 40003]


def test_free_ports_are_bindable():
    p = hosts.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
