"""Every patch and wrapper around py-libp2p 0.8.1 internals lives here, one per trap.
(Over 300 lines on purpose: the one place that touches the library's internals, so an
upgrade is checked against this file alone.)

py-libp2p runs stream handlers and pubsub work as tasks in nurseries it owns; an
exception that escapes any of them cancels the whole swarm or pubsub service, so a
single crafted frame from any peer can end the node. The patches below make every
entry point a peer can reach catch-all at its boundary: the stream is reset, the
peer is reported to `on_misbehaviour` (which penalises it) and the node goes on.

Patches, and the trap each closes (tests in tests/test_p2p_hardening.py; 6 and 7 in
tests/test_p2p_refusal.py):

1. `guard_stream_handlers`: the swarm's common stream handler (protocol negotiation
   plus the protocol's handler) is wrapped. Trap: garbage during multistream-select
   raises something other than `MultiselectError` (or a handler raises) and the
   exception escapes into the connection nursery, killing the host.
2. `guard_pubsub`: the pubsub read loop is re-registered behind a catch-all. Trap:
   `ParseFromString` raises protobuf's `DecodeError`, which `Pubsub.stream_handler`
   does not catch (it catches libp2p's own `ParseError`), and a malformed signed
   record or control message raises from inside the loop: either kills pubsub.
3. `guard_pubsub` also wraps `push_msg` for remote messages. Trap: `push_msg` runs as
   a pubsub service task; an undecodable `from`, key or signature raises there and
   the service manager cancels pubsub. Likewise gossipsub's `on_peer_subscribed` (mesh
   first-fill), which raised OSError reading a listener closed at shutdown.
4. `install_queue_size`: the per-peer outbound RPC queue grows from 32 to
   `OUTBOUND_QUEUE_SIZE`. Trap: bursts above 32 RPCs per peer are silently dropped.
   The gossip publish path adds backpressure on top (p2p.gossip).
5. Listener close, negative dial cache and 250 ms dial delay are handled in p2p.host
   (see `P2PHost.run` and `P2PHost._dial`).
6. `refuse_before_handshake`: the swarm's connection gate also asks `refuses(ip)`.
   Trap: py-libp2p learns who dials in only at the end of the Noise XX handshake (the
   dialer's static key and signed identity come in its third message), then builds the
   Yamux session, and tells notifees only after that: a banned peer that reconnects gets
   a full handshake and a session before anything of ours can refuse it. The gate
   (`Swarm._do_handle_inbound_connection`) is the only hook that runs on the raw socket
   before the first handshake byte, and it sees only the remote (ip, port), so what can
   be refused there is an address (p2p.standing decides which). It also filters our own
   dials, so we never dial a refused address either.
7. `refuse_after_security`: the upgrader's `upgrade_security` is wrapped. It is the
   earliest point where the peer id is known: a banned identity is dropped there,
   before the muxer, the notifees and any stream; `on_secured(peer, ip)` records the
   address each peer authenticated from (bans mark it).
8. `reannounce_subscriptions`: every peer is told our subscriptions again every few
   seconds. Trap: when our outbound pubsub stream to a peer dies while a connection to
   it stays (a duplicate connection closed, a stream reset), pubsub forgets the peer's
   subscriptions and opens a new stream, but the peer, whose own stream to us never
   broke, never announces them again: we stop sending it anything, for good, while its
   messages still reach us. Seen as a publisher whose reveals reached no participant for
   20 rounds after one peer was killed, while their commits kept reaching it (reproduced
   by resetting one stream: tests/test_p2p.py). A repeated hello is idempotent.
9. `serialise_pubsub`: one writer at a time per pubsub stream. Trap: besides each peer's
   sending task, pubsub writes to the same stream from other tasks (recent messages
   replayed, and queued ones flushed, to a peer that just subscribed), and a message
   larger than a muxer frame goes out in several writes: two writers interleave their
   frames, the peer cannot parse the stream and penalises us, an honest node. Seen as
   a 4-node mnist-cnn testnet (50 KB reveals) whose publisher banned a participant in
   its first round.
10. `serialise_pubsub` also makes blacklist teardown idempotent. Trap: two teardowns of
   one peer (a ban while its stream dies) both find its stream, and the second `del`
   raises KeyError in a pubsub service task, which ends the node (seen in the same run).
11. `report_floods`: gossipsub's own rate limits (IHAVE, IWANT, GRAFT) drop a flood
   silently, and a stream whose protocol negotiation
   fails (garbage, a wrong multistream header) is reset without a word: the sender kept
   its standing and could go on at no cost. Each now reports it as a stream error (2
   points), at most once a second per peer and kind, so a burst from an honest peer
   decays away while a sustained flood ends in a ban.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.pubsub import pubsub as _pubsub_mod
from libp2p.pubsub import rpc_queue as _rpc_queue_mod
from libp2p.transport.exceptions import SecurityUpgradeFailure

from p2p.addrs import ip_of_multiaddr, remote_ip

log = logging.getLogger(__name__)

OUTBOUND_QUEUE_SIZE = 1024

# Called with (peer id or None, what happened); must not raise.
Misbehaviour = Callable[[Any, str], None]


def _peer_of(stream: Any) -> Any:
    try:
        return stream.muxed_conn.peer_id
    except Exception:
        return None


async def _reset_quietly(stream: Any) -> None:
    # the stream may already be gone; there is nothing more to do then
    with trio.move_on_after(2), contextlib.suppress(Exception):
        await stream.reset()


def guard_stream_handlers(host: Any, on_misbehaviour: Misbehaviour) -> None:
    """Patch 1: no exception from negotiation or a protocol handler reaches the swarm
    (and patch 11: a failed inbound negotiation is reported)."""
    network = host.get_network()
    inner: Callable[[Any], Awaitable[None]] = host._swarm_stream_handler
    report = _Throttled(on_misbehaviour)
    negotiate: Callable[..., Awaitable[Any]] = host.multiselect.negotiate

    async def negotiate_reported(communicator: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await negotiate(communicator, *args, **kwargs)
        except MultiselectError as exc:
            peer = _peer_of(getattr(communicator, "read_writer", None))
            report(peer, f"stream error: protocol negotiation failed ({exc or 'malformed'})")
            raise

    host.multiselect.negotiate = negotiate_reported

    async def guarded(stream: Any) -> None:
        try:
            await inner(stream)
        except Exception as exc:
            peer = _peer_of(stream)
            log.info("stream from %s failed: %s: %s", peer, type(exc).__name__, exc)
            on_misbehaviour(peer, f"stream error {type(exc).__name__}")
            await _reset_quietly(stream)

    network.set_stream_handler(guarded)


def safe_handler(
    handler: Callable[[Any], Awaitable[None]], on_misbehaviour: Misbehaviour, name: str
) -> Callable[[Any], Awaitable[None]]:
    """Our own protocol handlers: an exception resets the stream, it never propagates."""

    async def guarded(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            peer = _peer_of(stream)
            log.warning("%s handler failed for %s: %s: %s", name, peer, type(exc).__name__, exc)
            on_misbehaviour(peer, f"{name} handler error")
            await _reset_quietly(stream)

    return guarded


def guard_pubsub(pubsub: Any, on_misbehaviour: Misbehaviour) -> None:
    """Patches 2 and 3, on one `Pubsub` instance (set before the service starts)."""

    async def read_loop(stream: Any) -> None:
        peer = _peer_of(stream)
        try:
            await pubsub.continuously_read_stream(stream)
        except Exception as exc:
            log.info("pubsub stream from %s failed: %s: %s", peer, type(exc).__name__, exc)
            on_misbehaviour(peer, f"malformed pubsub stream ({type(exc).__name__})")
            await _reset_quietly(stream)
            try:
                pubsub._handle_dead_peer(peer)
            except Exception:  # bookkeeping only; the stream is already reset
                log.debug("pubsub dead-peer cleanup failed for %s", peer, exc_info=True)

    for protocol in pubsub.router.get_protocols():
        pubsub.host.set_stream_handler(protocol, read_loop)

    inner_push: Callable[[Any, Any], Awaitable[None]] = pubsub.push_msg

    async def push_msg(forwarder: Any, msg: Any) -> None:
        if forwarder == pubsub.my_id:
            await inner_push(forwarder, msg)  # our own publish: let the caller see errors
            return
        try:
            await inner_push(forwarder, msg)
        except Exception as exc:
            log.info("gossip message from %s failed: %s: %s", forwarder, type(exc).__name__, exc)
            on_misbehaviour(forwarder, f"undecodable gossip message ({type(exc).__name__})")

    pubsub.push_msg = push_msg

    # Also a pubsub service task: gossipsub's mesh first-fill on a peer's subscription
    # reads our listen addresses, and a listener closed under it (shutdown) raised
    # OSError there, which ended pubsub (seen failing a test's teardown in CI).
    router = pubsub.router
    inner_subscribed: Callable[[Any, str], Awaitable[None]] | None = getattr(
        router, "on_peer_subscribed", None
    )
    if inner_subscribed is not None:
        subscribed = inner_subscribed

        async def on_peer_subscribed(peer: Any, topic: str) -> None:
            try:
                await subscribed(peer, topic)
            except Exception as exc:
                log.debug("mesh fill for %s failed: %s: %s", peer, type(exc).__name__, exc)

        router.on_peer_subscribed = on_peer_subscribed


def serialise_pubsub(pubsub: Any) -> None:
    """Patches 9 and 10, on one `Pubsub` instance (set before the service starts)."""
    locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()
    inner_write: Callable[[Any, Any], Awaitable[bool]] = pubsub.write_msg

    async def write_msg(stream: Any, rpc: Any) -> bool:
        lock = locks.get(stream)
        if lock is None:
            lock = locks[stream] = trio.Lock()
        async with lock:
            return await inner_write(stream, rpc)

    async def teardown_if_connected(peer: Any) -> None:
        stream = pubsub.peers.get(peer)
        if stream is not None:
            await _reset_quietly(stream)
            if pubsub.peers.get(peer) is stream:
                del pubsub.peers[peer]
        pubsub._forget_all_subscriptions(peer)

    pubsub.write_msg = write_msg
    pubsub._teardown_if_connected = teardown_if_connected


class _Throttled:
    """Reports of one kind, at most one per peer a second (patch 11)."""

    def __init__(self, on_misbehaviour: Misbehaviour, every_s: float = 1.0) -> None:
        self.on_misbehaviour = on_misbehaviour
        self.every_s = every_s
        self.last: dict[Any, float] = {}

    def __call__(self, peer: Any, reason: str) -> None:
        now = time.monotonic()
        if peer is None or now - self.last.get(peer, -self.every_s) < self.every_s:
            return
        if len(self.last) > 4096:  # peers come and go; forget the old ones
            self.last = {p: t for p, t in self.last.items() if now - t < self.every_s}
        self.last[peer] = now
        self.on_misbehaviour(peer, reason)


def report_floods(pubsub: Any, on_misbehaviour: Misbehaviour) -> None:
    """Patch 11, on one `Pubsub` instance's gossipsub router."""
    router = pubsub.router
    for name, what in (
        ("_check_ihave_rate_limit", "IHAVE"),
        ("_check_iwant_rate_limit", "IWANT"),
        ("_check_graft_flood_protection", "GRAFT"),
    ):
        check = getattr(router, name, None)
        if check is not None:
            setattr(router, name, _reporting(check, what, _Throttled(on_misbehaviour)))


def _reporting(check: Callable[..., bool], what: str, report: _Throttled) -> Callable[..., bool]:
    def reported(peer: Any, *args: Any) -> bool:
        ok = check(peer, *args)
        if not ok:
            report(peer, f"stream error: {what} flood over gossipsub's limit")
        return ok

    return reported


class _LargerRpcQueue(_rpc_queue_mod.RpcQueue):
    def __init__(
        self,
        max_size: int = OUTBOUND_QUEUE_SIZE,
        max_message_size: int = _rpc_queue_mod.DefaultMaxMessageSize,
    ) -> None:
        super().__init__(max(max_size, OUTBOUND_QUEUE_SIZE), max_message_size)


async def reannounce_subscriptions(pubsub: Any, interval_s: float) -> None:
    """Patch 8: queue our hello (subscriptions and signed record) to every peer, ahead of
    other traffic, every `interval_s`; runs until cancelled."""
    while True:
        await trio.sleep(interval_s)
        if not pubsub.topic_ids:
            continue
        hello = pubsub.get_hello_packet()
        for queue in list(pubsub.peer_queues.values()):
            queue.push(hello, priority=True)  # a full queue drops it: the next round comes


def install_queue_size() -> None:
    """Patch 4 (process-wide, idempotent): pubsub builds its peer queues from this name."""
    namespace = vars(_pubsub_mod)
    if namespace.get("RpcQueue") is not _LargerRpcQueue:
        namespace["RpcQueue"] = _LargerRpcQueue


def refuse_before_handshake(swarm: Any, refuses: Callable[[str], bool]) -> None:
    """Patch 6: raw connections from an address `refuses` names close before the handshake."""
    gate = swarm.connection_gate
    inner: Callable[[Any], Awaitable[bool]] = gate.is_allowed

    async def is_allowed(remote_addr: Any) -> bool:
        ip = ip_of_multiaddr(remote_addr)
        if ip is not None and refuses(ip):
            log.debug("refused %s before the handshake (banned address)", remote_addr)
            return False
        return await inner(remote_addr)

    gate.is_allowed = is_allowed


def refuse_after_security(
    swarm: Any, refuses_peer: Callable[[Any], bool], on_secured: Callable[[Any, str | None], None]
) -> None:
    """Patch 7: a banned identity is dropped right after the Noise handshake, before the muxer."""
    upgrader = swarm.upgrader
    inner: Callable[..., Awaitable[Any]] = upgrader.upgrade_security

    async def upgrade_security(raw_conn: Any, is_initiator: bool, peer_id: Any = None) -> Any:
        secured = await inner(raw_conn, is_initiator, peer_id)
        peer = secured.get_remote_peer()
        on_secured(peer, remote_ip(raw_conn))
        if refuses_peer(peer):
            log.debug("refused %s after the handshake (banned)", peer)
            with trio.move_on_after(2), contextlib.suppress(Exception):
                await secured.close()
            raise SecurityUpgradeFailure(f"peer {peer} is banned")
        return secured

    upgrader.upgrade_security = upgrade_security
