"""Keepalive with real hosts: a peer that stops answering is disconnected within the bound.

A frozen peer (here: one whose ping handler reads and never answers; in
tests/test_p2p_procs.py a SIGSTOPped process) keeps its TCP connection open; without
pings the connection would stay until TCP's retransmissions give up (38 to 56 s).
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import INotifee

from p2p import P2PHost
from p2p.keepalive import PING_PROTOCOL
from support.chainfactory import make_chain
from support.p2p_util import config, running, wait_for

CHAIN = make_chain()
FAST = {"ping_interval_s": 0.5, "ping_timeout_s": 0.5, "ping_failures": 2}
BOUND_S = 2 * (0.5 + 0.5) + 1.0  # failures x (interval + timeout), and a scan


class Disconnects(INotifee):
    """Records when each connection of a host closed."""

    def __init__(self) -> None:
        self.at: list[float] = []

    async def disconnected(self, network: Any, conn: Any) -> None:
        self.at.append(trio.current_time())

    async def opened_stream(self, network: Any, stream: Any) -> None: ...
    async def closed_stream(self, network: Any, stream: Any) -> None: ...
    async def connected(self, network: Any, conn: Any) -> None: ...
    async def listen(self, network: Any, maddr: Any) -> None: ...
    async def listen_close(self, network: Any, maddr: Any) -> None: ...


async def never_answer(stream: Any) -> None:
    """A frozen peer's ping handler: it takes the bytes and sends nothing back."""
    while await stream.read(64):
        pass


async def test_a_peer_that_stops_answering_pings_is_disconnected_within_the_bound() -> None:
    a = P2PHost(config("ka-a", **FAST), CHAIN.chain_id)
    frozen = P2PHost(config("ka-frozen", ping_interval_s=0), CHAIN.chain_id)
    healthy = P2PHost(config("ka-healthy", ping_interval_s=0), CHAIN.chain_id)
    closed = Disconnects()
    a.libp2p.get_network().register_notifee(closed)
    async with running([a, frozen, healthy]):
        frozen.libp2p.set_stream_handler(PING_PROTOCOL, never_answer)
        await a.connect(healthy.addrs[0])
        start = trio.current_time()
        await a.connect(frozen.addrs[0])
        with trio.fail_after(BOUND_S + 2):  # slack for a loaded machine
            while not closed.at:
                await trio.sleep(0.05)
        assert closed.at[0] - start <= BOUND_S + 1
        assert a.keepalive.closed == 1
        # the reconnect loop redials the known peer: it is closed again, and again
        await wait_for(lambda: a.keepalive.closed >= 2, 4 * BOUND_S)
        assert a.is_connected(healthy.peer_id), "a peer that answers stays connected"


async def test_pings_keep_answering_peers_connected_and_stop_with_the_host() -> None:
    hosts = [P2PHost(config(f"ka-ok{i}", **FAST), CHAIN.chain_id) for i in range(2)]
    async with running(hosts):
        await hosts[1].connect(hosts[0].addrs[0])
        await trio.sleep(6 * 0.5)  # several rounds of pings both ways
        assert all(h.is_connected(o.peer_id) for h, o in zip(hosts, hosts[::-1], strict=True))
        assert all(h.keepalive.closed == 0 for h in hosts)
        assert all(h.keepalive.watching == 1 for h in hosts)
    assert all(h.keepalive.watching == 0 for h in hosts), "watchers end with the host"
