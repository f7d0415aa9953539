"""Preflight: refuse a listen address another process holds, before any slow work.

py-libp2p's TCP listener sets SO_REUSEPORT (for hole punching), so a second node given
a taken p2p port binds it too and the kernel splits the first node's inbound
connections between the two processes. A plain bind (SO_REUSEADDR only, so a port our
own last run left in TIME_WAIT is not "taken") fails on any listener, SO_REUSEPORT or
not: that is the check. The window between it and the real bind is milliseconds.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from node.home import HomeError


def tcp_listen_ports(listen: Sequence[str]) -> list[tuple[str, int]]:
    """(host, port) of every `/ip4|ip6/<host>/tcp/<port>` listen address with a fixed port."""
    out = []
    for addr in listen:
        parts = addr.split("/")  # ["", "ip4", host, "tcp", port, ...]
        if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
            try:
                port = int(parts[4])
            except ValueError:
                continue  # the host's own parser reports a malformed address
            if port:
                out.append((parts[2], port))
    return out


def check_free(host: str, port: int, what: str, fix: str) -> None:
    """HomeError in one line if another process listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise HomeError(
                    f"the {what} port {host}:{port} is taken by another process (another "
                    f"node?): {fix}"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise HomeError(
                    f"the {what} address {host}:{port} is not an address of this machine: {fix}"
                ) from None
            raise HomeError(f"cannot listen on {host}:{port} for the {what}: {exc}") from None


def check_ports(
    listen: Sequence[str], api_host: str, api_port: int, where: str, flags: bool = False
) -> None:
    """Both of a node's ports, before it fetches, builds or dials anything. `where`: the
    config file (or, `flags`, the command line) to fix them in."""
    p2p_fix = "pick a free one with --listen" if flags else f"set [p2p] listen in {where}"
    api_fix = "pick a free one with --api-port" if flags else f"set [api] port in {where}"
    for host, port in tcp_listen_ports(listen):
        check_free(host, port, "p2p", p2p_fix)
    if api_port:
        check_free(api_host, api_port, "API", api_fix)
