"""Addresses: names resolved at dial time, and the key a source address is counted under.

One machine owns one IPv4 address but a whole IPv6 /64, so limits and bans that are
meant per machine count an IPv6 peer by its /64 (`addr_key`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

import multiaddr
import trio

log = logging.getLogger(__name__)

UNKNOWN_ADDR = "?"  # streams whose transport has no IP address share one budget

_DNS_FAMILIES = {"dns4": socket.AF_INET, "dns6": socket.AF_INET6, "dns": socket.AF_UNSPEC}


async def resolve_addr(addr: multiaddr.Multiaddr) -> list[multiaddr.Multiaddr]:
    """`/dns4|dns6|dns/<name>/...` as IP multiaddrs; any other address unchanged.

    py-libp2p's own resolver (dnspython) ignores /etc/hosts and fails under trio here,
    so the system resolver does it: hosts file, then DNS (Docker's for service names).
    Resolved again at every dial: a restarted container may come back on a new IP.
    An unresolvable name gives [] (the reconnect loop tries again later).
    """
    parts = str(addr).split("/")  # ["", "dns4", "<name>", "tcp", "<port>", ...]
    family = _DNS_FAMILIES.get(parts[1]) if len(parts) > 2 else None
    if family is None:
        return [addr]
    try:
        infos = await trio.socket.getaddrinfo(parts[2], None, family, socket.SOCK_STREAM)
    except OSError as exc:
        log.debug("cannot resolve %s: %s", addr, exc)
        return []
    rest = "/".join(parts[3:])
    out: list[multiaddr.Multiaddr] = []
    for fam, *_, sockaddr in infos:
        proto = "ip4" if fam == socket.AF_INET else "ip6"
        resolved = multiaddr.Multiaddr(f"/{proto}/{sockaddr[0]}/{rest}")
        if resolved not in out:
            out.append(resolved)
    return out


def addr_key(ip: str | None) -> str:
    """The budget an address counts against: the IPv4 address, or the IPv6 /64."""
    if not ip:
        return UNKNOWN_ADDR
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def remote_ip(conn: Any) -> str | None:
    """The remote IP of a raw connection, secured connection or stream (None if it has none)."""
    try:
        remote = conn.get_remote_address()
    except Exception:  # transports without an address (relays) or a closed connection
        return None
    if not remote:
        return None
    return str(remote[0])


def ip_of_multiaddr(addr: Any) -> str | None:
    """The literal IP of `/ip4/...` or `/ip6/...` (None for names and other transports)."""
    for proto in ("ip4", "ip6"):
        try:
            return str(addr.value_for_protocol(proto))
        except Exception:  # ProtocolLookupError: not this protocol
            continue
    return None
