"""Banned peers are refused as early as py-libp2p allows (p2p.hardening patches 6 and 7).

The raw socket is the earliest point, and it knows only the remote address: a banned
address is closed before the first handshake byte, which a raw TCP client sees as EOF
where it would otherwise read the listener's `/multistream/1.0.0` greeting. Peers have
their own loopback addresses here (support.p2p_util.dial_from). A banned identity on an
address that honest peers share is dropped right after the Noise handshake instead:
no muxer, no `connected` notification, no stream.
"""

from __future__ import annotations

import socket
from contextlib import suppress
from typing import Any

import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID

from p2p import P2PHost
from p2p.standing import Standing
from support.chainfactory import make_chain
from support.p2p_util import (
    bare_connect,
    bare_hosts,
    config,
    dial_from,
    running,
    wait_for,
)

CHAIN = make_chain()
GREETING = b"\x13/multistream/1.0.0\n"


def greeting_from(src: str, port: int) -> bytes:
    """What the listener says first to a raw TCP client from `src` (b"" if it hangs up)."""
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        try:
            return s.recv(len(GREETING))
        except ConnectionResetError:
            return b""


async def greeting(src: str, host: P2PHost) -> bytes:
    port = int(host.addrs[0].split("/")[4])
    return await trio.to_thread.run_sync(greeting_from, src, port)


class Connections(INotifee):
    """Records every peer the swarm reports connected (after the muxer is up)."""

    def __init__(self) -> None:
        self.seen: list[ID] = []

    async def connected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.seen.append(conn.muxed_conn.peer_id)

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()


async def connect_and_ban(target: P2PHost, x: Any) -> ID:
    """`x` connects; `target` bans it and drops the connection."""
    await bare_connect([x], target)
    peer: ID = x.get_id()
    await wait_for(lambda: target.standing.address_of(peer) is not None, 5)
    target.ban(peer, "test")
    await wait_for(lambda: not target.is_connected(peer), 5)
    return peer


async def test_a_banned_peer_alone_on_its_address_is_refused_before_the_handshake() -> None:
    target = P2PHost(config("refuse-raw", ban_s=2.0), CHAIN.chain_id)
    async with running([target]), bare_hosts(1, "127.0.0.6") as (x,):
        assert await greeting("127.0.0.6", target) == GREETING
        peer = await connect_and_ban(target, x)
        assert target.standing.address_of(peer) == "127.0.0.6"
        assert await greeting("127.0.0.6", target) == b""  # closed before any handshake byte
        assert await greeting("127.0.0.7", target) == GREETING  # other addresses are not
        with suppress(Exception):
            await bare_connect([x], target)
        assert not target.is_connected(peer)
        await trio.sleep(2.0)  # the ban ends, and with it the address's
        assert await greeting("127.0.0.6", target) == GREETING


async def test_a_banned_identity_on_a_shared_address_is_dropped_before_the_muxer() -> None:
    target = P2PHost(config("refuse-id"), CHAIN.chain_id)
    honest = P2PHost(config("refuse-id-honest"), CHAIN.chain_id)  # also on 127.0.0.1
    seen = Connections()
    target.libp2p.get_network().register_notifee(seen)
    async with running([target, honest]), bare_hosts(1, "127.0.0.1") as (x,):
        await honest.connect(target.addrs[0])
        peer = await connect_and_ban(target, x)
        seen.seen.clear()
        # the honest peer's address stays open: a raw client still gets the greeting
        assert await greeting("127.0.0.1", target) == GREETING
        for _ in range(3):
            with suppress(Exception):
                await bare_connect([x], target)
        await trio.sleep(0.5)
        assert peer not in seen.seen  # never got as far as a muxed connection
        assert not target.is_connected(peer)
        assert target.is_connected(honest.peer_id)


async def test_identities_rotated_on_one_address_get_the_address_refused() -> None:
    target = P2PHost(config("refuse-rotate", addr_ban_after=2), CHAIN.chain_id)
    neighbour = P2PHost(config("refuse-rotate-neighbour"), CHAIN.chain_id)
    dial_from(neighbour.libp2p, "127.0.0.8")  # a peer in good standing on the same address
    async with running([target, neighbour]), bare_hosts(2, "127.0.0.8") as (x1, x2):
        await neighbour.connect(target.addrs[0])
        await connect_and_ban(target, x1)
        assert await greeting("127.0.0.8", target) == GREETING  # one offender: shared, open
        await connect_and_ban(target, x2)
        assert await greeting("127.0.0.8", target) == b""  # two: the address is refused
        assert target.is_connected(neighbour.peer_id)  # what is connected stays connected


def test_standing_rules_without_a_network() -> None:
    standing = Standing(ban_threshold=100, decay_per_s=1, ban_s=10, addr_ban_after=2)
    a, b, c = (ID(bytes([i]) * 34) for i in (1, 2, 3))
    assert standing.penalise(a, 60, now=0) == 60
    assert standing.penalise(a, 60, now=10) == 110  # 60 decayed to 50, plus 60
    for peer in (a, b, c):
        standing.seen(peer, "10.0.0.1")
    standing.ban(a, now=10)
    assert standing.is_banned(a, now=19) and not standing.is_banned(a, now=20)
    assert standing.refuses_addr("10.0.0.1", 11, lambda: set())  # alone there: refused
    assert not standing.refuses_addr("10.0.0.1", 11, lambda: {"10.0.0.1"})  # shared: open
    standing.ban(b, now=11)
    assert standing.refuses_addr("10.0.0.1", 12, lambda: {"10.0.0.1"})  # rotating: refused
    assert not standing.refuses_addr("10.0.0.2", 12, lambda: set())
    assert standing.expire(now=20) == [a]
    assert standing.score(a, now=20) == 0 and standing.banned_identities("10.0.0.1", 20) == 1
    assert standing.refuses_addr("10.0.0.1", 20.5, lambda: set())  # b's ban lasts until 21
    assert not standing.refuses_addr("10.0.0.1", 21, lambda: set())
