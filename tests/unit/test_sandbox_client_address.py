"""The sandbox engine hands a client transfer URLs on the address that client reached
it at (all hosts of the lab run on this machine): a VM on user-mode networking that
reached the engine as 10.0.2.2 can reach the imageio daemons there too."""
from __future__ import annotations

import pytest

from sandbox.engine.render import CLIENT_ADDRESS, _for_client


class E:
    address = "127.0.0.1"


URL = "https://127.0.0.1:54322/images/abc"


@pytest.mark.parametrize("client, want", [
    (None, URL),
    ("127.0.0.1", URL),
    ("localhost", URL),
    ("::1", URL),
    ("10.0.2.2", "https://10.0.2.2:54322/images/abc"),
    ("fd00::2", "https://[fd00::2]:54322/images/abc"),
])
def test_transfer_url_follows_the_client(client, want):
    token = CLIENT_ADDRESS.set(client)
    try:
        assert _for_client(E(), URL) == want
    finally:
        CLIENT_ADDRESS.reset(token)


def test_a_fixed_lab_address_wins():
    fixed = E()
    fixed.address = "10.0.2.2"
    token = CLIENT_ADDRESS.set("192.0.2.7")
    try:
        assert _for_client(fixed, "https://10.0.2.2:1/images/x") == "https://10.0.2.2:1/images/x"
        assert _for_client(E(), None) is None
    finally:
        CLIENT_ADDRESS.reset(token)
