"""Peer discovery with py-libp2p's own Kademlia DHT, so a node given one bootstrap
address meets the rest of the network (a node that knew only its bootstrap peer stayed
at one peer for life, and its first aggregation failed: the others never saw it).

The DHT runs in server mode with random walk. Measured (5 hosts, the newcomer given one
address): left to its defaults it finds the others in ~30 s (its random walk runs once
at start, on an empty table, then every 120 s); refreshing the routing table when a
connection opens finds them in 0.3-0.6 s. So a new connection wakes a refresh (a burst
of them makes one), refreshes repeat while they find new peers and the host wants more
(backing off to the walk's period when they find none), and the host dials what the
table holds (`candidates`) until it has its target number of peers.

The library's defaults that do not fit a zkpot network are set here, process-wide:
- its protocol id is IPFS's (`/ipfs/kad/1.0.0`) and its `protocol_prefix` argument is
  not read, so the id is replaced in the modules that import it: a zkpot node's DHT
  never mixes with IPFS's;
- it accepts any record PUT by any peer; `strict_validation` limits records to the
  validated namespaces (we store none);
- every inbound query logs a WARNING "Failed to read DHT message" when the querier
  closes its stream normally, and every query to a peer that is down a bare WARNING
  "Failed to open stream to ..." (11 in 2 minutes with one peer dead): both loggers say
  errors only (the host's dial loop reports a peer that is down, rate-limited).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.kad_dht import common, kad_dht, peer_routing, provider_store, value_store
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

log = logging.getLogger(__name__)

PROTOCOL = TProtocol("/zkpot/kad/1.0.0")
WALK_INTERVAL_S = 60.0  # the random walk's period (the library's: 120 s)
REFRESH_GAP_S = 1.0  # a refresh this long after a new connection (a burst makes one)


def _use_zkpot_protocol() -> None:
    for module in (common, kad_dht, peer_routing, provider_store, value_store):
        module.PROTOCOL_ID = PROTOCOL  # type: ignore[attr-defined]
    for name in ("libp2p.kad_dht.kad_dht", "libp2p.kad_dht.peer_routing"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Discovery:
    """The DHT of one host; `run` it inside the host's running context."""

    def __init__(self, libp2p: Any) -> None:
        _use_zkpot_protocol()
        self.dht = KadDHT(
            libp2p,
            DHTMode.SERVER,
            enable_random_walk=True,
            strict_validation=True,
            max_peers_per_subnet=0,  # a testnet's nodes may share one public /24
        )
        if self.dht.rt_refresh_manager is not None:
            self.dht.rt_refresh_manager.refresh_interval = WALK_INTERVAL_S
        self._wake = trio.Event()

    @asynccontextmanager
    async def run(self, wanted: Callable[[], bool]) -> AsyncIterator[Discovery]:
        """`wanted`: whether the host would take more peers (below its target)."""
        async with background_trio_service(self.dht), trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_loop, wanted)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    def connected(self) -> None:
        """A connection opened: its peer's table may hold peers we do not know."""
        self._wake.set()

    async def _refresh_loop(self, wanted: Callable[[], bool]) -> None:
        """Refresh the routing table REFRESH_GAP_S after a new connection (several
        connections in a gap make one refresh: the DHT's own dials open connections
        too), and while the host wants peers and a refresh still finds new ones; each
        refresh that finds nothing doubles the wait, up to the walk's own period."""
        gap = REFRESH_GAP_S
        while True:
            with trio.move_on_after(gap):
                await self._wake.wait()
                await trio.sleep(REFRESH_GAP_S)  # let identify finish; coalesce a burst
            if self._wake.is_set():
                self._wake, gap = trio.Event(), REFRESH_GAP_S
            if not wanted():
                continue
            before = set(self.candidates())
            try:
                await self.dht.refresh_routing_table()
            except Exception as exc:  # best effort: the next refresh comes anyway
                log.debug("routing table refresh failed: %s", exc)
            found = set(self.candidates()) - before
            gap = REFRESH_GAP_S if found else min(WALK_INTERVAL_S, 2 * gap)

    def candidates(self) -> list[ID]:
        """Peers the DHT knows (their addresses are in the host's peerstore)."""
        return list(self.dht.routing_table.get_peer_ids())

    def forget(self, peer: ID) -> None:
        """A banned peer leaves the table, so nobody is pointed to it by us."""
        try:
            self.dht.routing_table.remove_peer(peer)
        except Exception:
            log.debug("removing %s from the routing table failed", peer, exc_info=True)
