"""Where a webhook may send: public addresses, and the networks an admin allows.

A webhook URL is chosen by an API caller, and the orchestrator sits inside the
datacenter: without a check it would POST to (and report the answers of) its
own loopback services, the cloud metadata address (169.254.169.254), the
engine's and the hypervisors' private addresses. So loopback, link-local,
private (RFC 1918, RFC 6598 shared), unique-local (fc00::/7), unspecified,
multicast and reserved destinations are refused unless they fall in one of
`webhooks.allow_networks` (CIDRs; e.g. `["10.20.0.0/16"]` for an in-house
receiver).

The check is made twice:
- when a webhook is created or its URL changed, on an IP literal (and on
  `localhost`): 422;
- at every delivery, on the addresses the connector is about to connect to
  (`GuardedConnector` checks the result of the name resolution it then uses,
  so a name that resolves to a public address when created and to loopback
  later — DNS rebinding — is refused before any connection is made).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

import aiohttp

from ..errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public either


class BlockedDestination(OSError):
    """A webhook destination outside the public internet and the allowed networks."""


def parse_networks(raw: Iterable[str], name: str = "webhooks.allow_networks") -> tuple[Network, ...]:
    out = []
    for item in raw or ():
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not a network (CIDR such as 10.0.0.0/8 or fd00::/8)") from None
    return tuple(out)


def kind(addr: Address) -> str | None:
    """Why `addr` is not a public destination, or None if it is one."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return "loopback"
    if addr.is_link_local:
        return "link-local"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_multicast:
        return "multicast"
    if isinstance(addr, ipaddress.IPv6Address) and addr in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if addr.is_private or (isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED):
        return "private"
    if addr.is_reserved:
        return "reserved"
    return None


def _allowed(addr: Address, allow: tuple[Network, ...]) -> bool:
    cands = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        cands.append(addr.ipv4_mapped)
    return any(a.version == n.version and a in n for a in cands for n in allow)


def check_address(host: str, allow: tuple[Network, ...]) -> None:
    """Raise BlockedDestination unless `host` (an IP address) may be sent to."""
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    why = kind(addr)
    if why is not None and not _allowed(addr, allow):
        raise BlockedDestination(
            f"destination {addr} is a {why} address; webhooks may reach it only when "
            f"webhooks.allow_networks lists it")


def check_host(hostname: str, allow: tuple[Network, ...]) -> None:
    """The check made when a URL is accepted: IP literals and localhost names."""
    h = hostname.strip("[]").rstrip(".").lower()
    if h == "localhost" or h.endswith(".localhost"):
        check_address("127.0.0.1", allow)
        return
    try:
        ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return  # a name: checked after resolution at each delivery
    check_address(h, allow)


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that refuses to connect to blocked addresses.

    Every connection aiohttp makes goes through `_resolve_host` (IP literals
    included) and connects to exactly the addresses it returns, so checking
    them here leaves no window between the check and the connection.
    """

    def __init__(self, allow: tuple[Network, ...], **kw):
        super().__init__(**kw)
        self._allow = allow

    async def _resolve_host(self, host, port, traces=None):  # noqa: D401 - aiohttp's hook
        hosts = await super()._resolve_host(host, port, traces=traces)
        for h in hosts:
            check_address(h["host"], self._allow)
        return hosts
