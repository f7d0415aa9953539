"""The node's libp2p host: identity, transports, peers, penalties, reconnects, shutdown.

Everything py-libp2p gets wrong by default is fixed here or in `p2p.hardening`:
Noise only (plaintext, secio and TLS are never offered), Yamux only, one connection
per peer (py-libp2p otherwise waits 250 ms per connect for a second dial), the
negative dial cache is lifted before each reconnect (a failed dial would otherwise
refuse the peer for 60 s), and leaving `run()` closes listeners and connections
(leaving py-libp2p's `host.run()` leaves the listening socket open).
Peer addresses may name hosts (`/dns4/node1/tcp/27101/p2p/<id>`, as in a compose
testnet): they are resolved by the system resolver at every dial.

Refusals, earliest first: a banned address on the raw socket before the handshake
(hardening patch 6), a banned identity right after the Noise handshake (patch 7), the
connection limit once connected (`_Notifee`). Scores and bans are p2p.standing;
`merit` (p2p.slots) records which peers have served us, for the sync server's slots;
`keepalive` (p2p.keepalive) closes connections whose peer stopped answering pings;
`discovery` (p2p.discovery, the library's Kademlia DHT) finds the peers our bootstrap
peers know, and the reconnect loop dials them until `target_peers` are connected.
(Over 300 lines: one class owns the host's lifecycle, peers and refusals; the logic
behind each lives in the modules named above.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from p2p import hardening, penalties
from p2p.addrs import addr_key, ip_of_multiaddr, resolve_addr
from p2p.discovery import Discovery
from p2p.gossip import Gossip, GossipConfig
from p2p.identity import key_pair_from_seed, peer_id_from_seed, public_key_of
from p2p.keepalive import Keepalive
from p2p.lognoise import quiet_dial_failures
from p2p.slots import PeerMerit
from p2p.standing import Standing

__all__ = [
    "HostConfig",
    "P2PHost",
    "key_pair_from_seed",
    "peer_id_from_seed",
    "public_key_of",
    "resolve_addr",
]

log = logging.getLogger(__name__)

StreamHandler = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class HostConfig:
    """What a node operator configures; defaults suit a loopback testnet."""

    seed: bytes  # the node's ed25519 seed: the same key signs proof txs and blocks
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()  # full multiaddrs with /p2p/<peer id>
    max_connections: int = 64
    reconnect_interval_s: float = 2.0
    dial_timeout_s: float = 10.0
    ban_threshold: float = 100.0
    penalty_decay_per_s: float = 1.0
    ban_s: float = 300.0
    # an address is refused before the handshake once this many identities from it are
    # banned, even while peers in good standing share it (p2p.standing)
    addr_ban_after: int = 3
    # keepalive (p2p.keepalive): a ping per peer every interval (0: off); a connection
    # that misses `ping_failures` in a row is closed and the reconnect loop redials
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 3.0
    ping_failures: int = 2
    gossip: GossipConfig = field(default_factory=GossipConfig)
    # discovery (p2p.discovery): dial peers the DHT finds until this many are connected
    # (bootstrap peers are kept connected whatever the count); 0: no discovery (the
    # default until a gossip stall seen once with it is understood: docs/architecture.md)
    target_peers: int = 0


class _Notifee(INotifee):
    """Refuses connections beyond the connection limit (and banned peers, should one get
    past the security upgrade)."""

    def __init__(self, owner: P2PHost) -> None:
        self._owner = owner

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def connected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._owner._on_connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()


class P2PHost:
    """A hardened libp2p host with gossip for one chain; run it with `async with host.run()`."""

    def __init__(self, config: HostConfig, chain_id: bytes) -> None:
        hardening.install_queue_size()
        quiet_dial_failures()
        self.config = config
        self.chain_id = chain_id
        key_pair = key_pair_from_seed(config.seed)
        self._listen = [multiaddr.Multiaddr(a) for a in config.listen]
        noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
        self.libp2p: Any = new_host(
            key_pair=key_pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=self._listen,
            connection_config=ConnectionConfig(
                max_connections=config.max_connections,
                # Our reconnect loop keeps known peers connected; libp2p's auto-connector
                # and pruner would fight it, so its watermarks are neutral.
                min_connections=0,
                low_watermark=0,
                high_watermark=config.max_connections,
                max_connections_per_peer=1,
                dial_timeout=config.dial_timeout_s,
                inbound_stream_protocol_negotiation_timeout=10.0,
                outbound_stream_protocol_negotiation_timeout=10.0,
            ),
        )
        self.peer_id: ID = self.libp2p.get_id()
        self.standing = Standing(
            ban_threshold=config.ban_threshold,
            decay_per_s=config.penalty_decay_per_s,
            ban_s=config.ban_s,
            addr_ban_after=config.addr_ban_after,
        )
        self.merit = PeerMerit()  # who has served us: the sync server gives them slots first
        self._known: dict[ID, list[multiaddr.Multiaddr]] = {}
        for addr in config.bootstrap:
            self.add_peer_addr(addr)
        self._nursery: trio.Nursery | None = None
        self._running = False
        hardening.guard_stream_handlers(self.libp2p, self.misbehaved)
        swarm = self.libp2p.get_network()
        hardening.refuse_before_handshake(swarm, self.refuses_address)
        hardening.refuse_after_security(swarm, self.is_banned, self._on_secured)
        swarm.register_notifee(_Notifee(self))
        self.discovery = Discovery(self.libp2p) if config.target_peers > 0 else None
        self._next_try: dict[ID, tuple[float, float]] = {}  # discovered peer: (when, backoff)
        self.gossip = Gossip(self, chain_id, config.gossip)
        self.keepalive = Keepalive(
            self.libp2p,
            self.connected_peers,
            self._disconnect,
            interval_s=config.ping_interval_s,
            timeout_s=config.ping_timeout_s,
            failures=config.ping_failures,
        )

    # ------------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def run(self) -> AsyncIterator[P2PHost]:
        """Listen, start gossip and the reconnect loop; on exit close everything we opened."""
        network = self.libp2p.get_network()
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self.libp2p.run(self._listen))
                await stack.enter_async_context(background_trio_service(self.gossip.pubsub))
                await stack.enter_async_context(background_trio_service(self.gossip.router))
                if self.discovery is not None:
                    await stack.enter_async_context(self.discovery.run(self._wants_peers))
                await self.gossip.pubsub.wait_until_ready()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._running = True
                    await self.gossip.start(nursery)
                    nursery.start_soon(self._reconnect_loop)
                    if self.config.ping_interval_s > 0:
                        nursery.start_soon(self.keepalive.run)
                    try:
                        yield self
                    finally:
                        self._running = False
                        nursery.cancel_scope.cancel()
                self._nursery = None
                # Close connections and listeners while the swarm service still runs:
                # leaving host.run() alone would leave the listening socket open.
                with trio.move_on_after(5) as scope:
                    scope.shield = True
                    await self._close_network(network)
        finally:
            self._running = False
            self._nursery = None

    async def _close_network(self, network: Any) -> None:
        # listeners first (nothing new comes in), then every connection at once: closing
        # one takes a few hundred ms, and one after another would outlast the deadline
        for name, listener in list(network.listeners.items()):
            try:
                await listener.close()
            except Exception:
                log.debug("closing listener %s failed", name, exc_info=True)
        network.listeners.clear()
        async with trio.open_nursery() as nursery:
            for peer in list(network.connections):
                nursery.start_soon(self._close_peer, network, peer)

    async def _close_peer(self, network: Any, peer: ID) -> None:
        try:
            await network.close_peer(peer)
        except Exception:
            log.debug("closing connection to %s failed", peer, exc_info=True)

    @property
    def addrs(self) -> list[str]:
        """Dialable addresses with the real (bound) ports and our /p2p/ id."""
        return [str(a) for a in self.libp2p.get_addrs()]

    def peer_addrs(self, peer: ID) -> list[str]:
        """A connected peer's dialable addresses as we know them (its listen addresses
        once identify has run; the address we dialled), each with its /p2p/ id."""
        out: list[str] = []
        try:
            known = list(self.libp2p.get_peerstore().addrs(peer))
        except Exception:  # PeerStoreError: nothing recorded for it
            known = []
        for a in [*known, *self._known.get(peer, [])]:
            text = str(a)
            full = text if "/p2p/" in text else f"{text}/p2p/{peer}"
            if full not in out:
                out.append(full)
        return out

    # ------------------------------------------------------------------ peers

    def add_peer_addr(self, addr: str) -> ID:
        """Remember a peer's address; the reconnect loop keeps us connected to it."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        if info.peer_id != self.peer_id:
            known = self._known.setdefault(info.peer_id, [])
            for a in info.addrs:
                if a not in known:
                    known.append(a)
        return info.peer_id

    def connected_peers(self) -> list[ID]:
        return list(self.libp2p.get_network().connections)

    def is_connected(self, peer: ID) -> bool:
        return bool(self.libp2p.get_network().connections.get(peer))

    async def connect(self, addr: str) -> ID:
        """Dial `addr` now (and remember it); raises `ConnectionError` on failure."""
        peer = self.add_peer_addr(addr)
        if not await self._dial(peer):
            raise ConnectionError(f"could not connect to {addr}")
        return peer

    async def _dial(self, peer: ID) -> bool:
        if self.is_banned(peer) or peer == self.peer_id:
            return False
        known = self._known.get(peer, [])
        if not known:
            return False
        network = self.libp2p.get_network()
        # A failed dial puts the peer in a 60 s negative cache; a restarted peer must
        # be reachable as soon as it listens again.
        network.unblock_peer(peer)
        with trio.move_on_after(self.config.dial_timeout_s):
            try:
                addrs = [a for k in known for a in await resolve_addr(k)]
                if not addrs:
                    return False
                await self.libp2p.connect(PeerInfo(peer, addrs))
                return True
            except trio.Cancelled:
                raise
            except Exception as exc:
                log.debug("dial %s failed: %s: %s", peer, type(exc).__name__, exc)
        return False

    async def _reconnect_loop(self) -> None:
        while True:
            missing = [p for p in self._known if not self.is_connected(p) and not self.is_banned(p)]
            room = self.config.max_connections - len(self.connected_peers())
            found = self._discovered_to_dial()
            if (missing or found) and room > 0:
                async with trio.open_nursery() as nursery:
                    for peer in missing[:room]:
                        nursery.start_soon(self._dial, peer)
                    for peer in found[: max(0, room - len(missing))]:
                        nursery.start_soon(self._dial_discovered, peer)
            self._expire_bans()
            await trio.sleep(self.config.reconnect_interval_s)

    def _wants_peers(self) -> bool:
        return len(self.connected_peers()) < self.config.target_peers

    def _discovered_to_dial(self) -> list[ID]:
        """Peers the DHT found that we should dial now: while below target_peers, not
        connected, not banned, not a bootstrap peer (dialled anyway), their backoff over."""
        if self.discovery is None:
            return []
        want = self.config.target_peers - len(self.connected_peers())
        if want <= 0:
            return []
        now = time.monotonic()
        out = [
            p
            for p in self.discovery.candidates()
            if p != self.peer_id
            and p not in self._known
            and not self.is_connected(p)
            and not self.is_banned(p)
            and self._next_try.get(p, (0.0, 0.0))[0] <= now
        ]
        return out[:want]

    async def _dial_discovered(self, peer: ID) -> None:
        """Dial a peer at the addresses the DHT told us; back off (2 s doubling to 5 min)
        from one that does not answer, so a dead peer in the table costs little."""
        addrs = list(self.libp2p.get_peerstore().addrs(peer))
        ok = False
        if addrs:
            self.libp2p.get_network().unblock_peer(peer)
            with trio.move_on_after(self.config.dial_timeout_s):
                try:
                    await self.libp2p.connect(PeerInfo(peer, addrs))
                    ok = True
                except trio.Cancelled:
                    raise
                except Exception as exc:
                    log.debug("dial of discovered %s failed: %s: %s", peer, type(exc).__name__, exc)
        if ok:
            self._next_try.pop(peer, None)
            return
        backoff = min(300.0, 2 * self._next_try.get(peer, (0.0, 1.0))[1])
        self._next_try[peer] = (time.monotonic() + backoff, backoff)

    def _on_connected(self, peer: ID) -> None:
        if self.discovery is not None:
            self.discovery.connected()
        if self.is_banned(peer):
            reason = "banned"
        elif len(self.connected_peers()) > self.config.max_connections and peer not in self._known:
            reason = "connection limit"
        else:
            return
        log.info("refusing connection from %s (%s)", peer, reason)
        if self._nursery is not None:
            self._nursery.start_soon(self._disconnect, peer)

    async def _disconnect(self, peer: ID) -> None:
        with trio.move_on_after(5):
            try:
                await self.libp2p.disconnect(peer)
            except Exception:
                log.debug("disconnect %s failed", peer, exc_info=True)

    # ------------------------------------------------------------------ penalties

    def penalise(self, peer: ID | None, points: float, reason: str) -> None:
        """Add penalty points (they decay over time); past the threshold, ban the peer."""
        if peer is None or peer == self.peer_id:
            return
        now = time.monotonic()
        score = self.standing.penalise(peer, points, now)
        log.info("penalty %.0f for %s: %s (score %.0f)", points, peer, reason, score)
        if score >= self.config.ban_threshold and not self.standing.is_banned(peer, now):
            self.ban(peer, reason)

    def misbehaved(self, peer: Any, reason: str) -> None:
        """Hook for p2p.hardening: protocol-level garbage from `peer`."""
        points = (
            penalties.STREAM_ERROR if reason.startswith("stream error") else penalties.MALFORMED
        )
        if isinstance(peer, ID):
            self.penalise(peer, points, reason)

    def ban(self, peer: ID, reason: str) -> None:
        self.standing.ban(peer, time.monotonic())
        log.warning("banning %s for %.0f s: %s", peer, self.config.ban_s, reason)
        if self.discovery is not None:
            self.discovery.forget(peer)
        try:
            self.gossip.pubsub.add_to_blacklist(peer)
        except Exception:
            log.debug("pubsub blacklist failed for %s", peer, exc_info=True)
        if self._nursery is not None:
            self._nursery.start_soon(self._disconnect, peer)

    def is_banned(self, peer: ID) -> bool:
        return self.standing.is_banned(peer, time.monotonic())

    def penalty_score(self, peer: ID) -> float:
        return self.standing.score(peer, time.monotonic())

    def _expire_bans(self) -> None:
        for peer in self.standing.expire(time.monotonic()):
            self.gossip.pubsub.remove_from_blacklist(peer)

    def _on_secured(self, peer: ID, ip: str | None) -> None:
        if ip is not None:
            self.standing.seen(peer, addr_key(ip))

    def refuses_address(self, ip: str) -> bool:
        """Refuse a raw connection from `ip` before the handshake (p2p.standing's rule)."""
        return self.standing.refuses_addr(addr_key(ip), time.monotonic(), self._good_addresses)

    def _good_addresses(self) -> set[str]:
        # where peers in good standing are: the connected ones, and the ones we were told of
        good = [p for p in self.connected_peers() if not self.is_banned(p)]
        out = {a for a in map(self.standing.address_of, good) if a is not None}
        for peer, addrs in self._known.items():
            if not self.is_banned(peer):
                out.update(addr_key(ip) for ip in map(ip_of_multiaddr, addrs) if ip is not None)
        return out

    # ------------------------------------------------------------------ streams

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Register a request/response protocol; its exceptions never leave the handler."""
        name = protocol.rsplit("/", 2)[-2] if protocol.count("/") >= 2 else protocol
        self.libp2p.set_stream_handler(
            TProtocol(protocol), hardening.safe_handler(handler, self.misbehaved, name)
        )

    async def new_stream(self, peer: ID, protocol: str, timeout_s: float = 10.0) -> Any:
        """Open a stream (dialling known addresses if needed); raises `ConnectionError`."""
        with trio.move_on_after(timeout_s):
            if not self.is_connected(peer) and not await self._dial(peer):
                raise ConnectionError(f"peer {peer} is not reachable")
            try:
                return await self.libp2p.new_stream(peer, [TProtocol(protocol)])
            except trio.Cancelled:
                raise
            except Exception as exc:
                raise ConnectionError(
                    f"cannot open {protocol} to {peer}: {type(exc).__name__}: {exc}"
                ) from None
        raise ConnectionError(f"opening {protocol} to {peer} timed out after {timeout_s} s")

    def __repr__(self) -> str:
        return f"P2PHost({self.peer_id}, {len(self.connected_peers())} peers)"
