"""GossipSub topics for one chain: the round messages and the blocks.

Topics carry the chain id in hex, so two chains never share a mesh:

- `/zkpot/<chain-id-hex>/round/1`: every round message, canonical encodings (the types
  are p2p.topics.ROUND_TYPES): CommitTx, Reveal and ProofTx; JoinRequest and Membership
  (v3); the aggregation's Selection, MaskedUpdate, VectorPart (v7), Complete, Unmask,
  Dispute, PairReveal and SeedShare; Evidence (v5);
- `/zkpot/<chain-id-hex>/blocks/1`: a Block when its encoding is at most
  `GossipConfig.block_inline_max` bytes, otherwise a `BlockAnnounce` (hash, parent,
  height, round, size). The node ignores announces: a larger block reaches it by sync
  (p2p.sync, in chunks by content hash), which follows the heads peers report.

Every incoming message passes `_validate` before it is relayed or delivered: size
limit, then the canonical decode (both free of the node's state), then the node's
validator, within a budget per topic: `validation_timeout_s` on the round topic (zk
verification through the prover pool), `block_validation_budget_s` on the blocks topic
(cheap checks only; the node validates a relayed block fully afterwards). A validator
returns ACCEPT, REJECT or IGNORE and never raises into libp2p: an exception or a
REJECT penalises the forwarding peer; IGNORE (e.g. a proof whose reveal is not
here yet) drops the message without penalty. Rejected and ignored messages are
never relayed; one past its budget is IGNORE. The validators are where the node acts
on a message; accepted messages are not delivered again, except to a `listen`er
(tools and tests that watch the topics). The topics' wire values (names, payload
types, decoding) are p2p.topics. (A little over 300 lines: validation, delivery and
publishing with backpressure share the router and its queues.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub

from consensus.crypto import sha256
from consensus.errors import DecodeError
from consensus.secagg import AggMessage
from consensus.types import Block, CommitTx, Evidence, JoinRequest, Membership, ProofTx, Reveal
from p2p import hardening, penalties
from p2p.topics import (
    BLOCK_TYPES,
    MAX_GOSSIP_PAYLOAD,
    ROUND_TYPES,
    BlockAnnounce,
    GossipItem,
    TopicKind,
    Validator,
    Verdict,
    accept_all,
    decode_gossip,
    message_id,
    topic_name,
)

if TYPE_CHECKING:
    from p2p.host import P2PHost

__all__ = [  # the topics' wire values stay importable from here
    "BLOCK_TYPES",
    "GOSSIPSUB_PROTOCOLS",
    "MAX_GOSSIP_PAYLOAD",
    "ROUND_TYPES",
    "BlockAnnounce",
    "Delivered",
    "Gossip",
    "GossipConfig",
    "GossipItem",
    "TopicKind",
    "Validator",
    "Verdict",
    "accept_all",
    "decode_gossip",
    "message_id",
    "topic_name",
]

log = logging.getLogger(__name__)

GOSSIPSUB_PROTOCOLS = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]


@dataclass(frozen=True)
class GossipConfig:
    """GossipSub parameters, set explicitly (py-libp2p's defaults lose messages)."""

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval_s: int = 1  # py-libp2p's default is 120 s: meshes would form slowly
    # py-libp2p's spam filter drops above 10 msgs/s per peer and topic, silently; keep one
    # only against floods, far above any honest rate.
    max_msgs_per_topic_per_s: float = 2000.0
    block_inline_max: int = 512 * 1024
    validation_timeout_s: float = 30.0  # zk verification can queue behind the prover pool
    # A block's relay decision runs cheap checks only (node.blockrelay); a validator that
    # takes longer gets IGNORE, so a slow block never holds py-libp2p's validation slots.
    block_validation_budget_s: float = 1.0
    max_concurrent_validations: int = 32
    resubscribe_s: float = 5.0  # re-announce our subscriptions (p2p.hardening, patch 8)
    publish_wait_s: float = 10.0  # backpressure: wait this long for peer queues to drain
    queue_high_water: int = 256  # of hardening.OUTBOUND_QUEUE_SIZE


@dataclass(frozen=True)
class Delivered:
    """An accepted gossip message for the node."""

    kind: TopicKind
    item: GossipItem
    raw: bytes
    origin: ID  # the peer that published it (signed by its libp2p key)


class Gossip:
    """Both topics of one chain: validation, delivery and publishing with backpressure."""

    def __init__(self, host: P2PHost, chain_id: bytes, config: GossipConfig) -> None:
        self._host = host
        self.config = config
        self.topics = {kind: topic_name(chain_id, kind) for kind in TopicKind}
        self._kind_of = {name: kind for kind, name in self.topics.items()}
        self._validators: dict[TopicKind, Validator] = dict.fromkeys(TopicKind, accept_all)
        self.router: Any = GossipSub(
            protocols=GOSSIPSUB_PROTOCOLS,
            degree=config.degree,
            degree_low=config.degree_low,
            degree_high=config.degree_high,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=config.heartbeat_interval_s,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=config.max_msgs_per_topic_per_s,
            # Eclipse protection wants 3 distinct IPs in a mesh; a loopback testnet has one.
            eclipse_protection_enabled=False,
        )
        self.pubsub: Any = Pubsub(
            host.libp2p,
            self.router,
            strict_signing=True,
            msg_id_constructor=message_id,
            max_concurrent_validator_count=config.max_concurrent_validations,
            validation_timeout=config.validation_timeout_s + 5.0,
            # py-libp2p caches verdicts per message id; IGNORE must not stick for long.
            validation_cache_ttl=2,
            max_subscriptions_per_peer=16,
            allowed_topics=set(self.topics.values()),
        )
        hardening.guard_pubsub(self.pubsub, host.misbehaved)
        hardening.serialise_pubsub(self.pubsub)
        hardening.report_floods(self.pubsub, host.misbehaved)
        self._listeners: list[trio.MemorySendChannel[Delivered]] = []
        self._slow: set[ID] = set()  # peers whose outbound queue stayed full
        self.dropped = 0  # deliveries lost because a listener did not keep up
        self.stats = {v: 0 for v in Verdict}

    def set_validator(self, kind: TopicKind, validator: Validator) -> None:
        self._validators[kind] = validator

    async def start(self, nursery: trio.Nursery) -> None:
        for kind, name in self.topics.items():
            self.pubsub.set_topic_validator(name, self._make_validator(kind), True)
            sub = await self.pubsub.subscribe(name)
            nursery.start_soon(self._drain, kind, sub)
        nursery.start_soon(
            hardening.reannounce_subscriptions, self.pubsub, self.config.resubscribe_s
        )

    def _make_validator(self, kind: TopicKind) -> Callable[[ID, Any], Awaitable[bool]]:
        async def validate(forwarder: ID, msg: Any) -> bool:
            verdict = await self._validate(kind, forwarder, msg)
            self.stats[verdict] += 1
            return verdict is Verdict.ACCEPT

        return validate

    async def _validate(self, kind: TopicKind, forwarder: ID, msg: Any) -> Verdict:
        """Never raises: decode errors and validator exceptions are REJECT."""
        try:
            data = bytes(msg.data)
            item = decode_gossip(kind, data)
        except DecodeError as exc:
            self._host.penalise(forwarder, penalties.INVALID, f"undecodable gossip: {exc}")
            return Verdict.REJECT
        except Exception as exc:
            self._host.penalise(forwarder, penalties.INVALID, f"bad gossip message: {exc!r}")
            return Verdict.REJECT
        verdict = Verdict.IGNORE
        budget = self.config.validation_timeout_s
        if kind is TopicKind.BLOCKS:
            budget = self.config.block_validation_budget_s
        with trio.move_on_after(budget):
            try:
                verdict = await self._validators[kind](item, data, forwarder)
            except Exception:
                log.exception("gossip validator raised on %s from %s", item.NAME, forwarder)
                verdict = Verdict.REJECT
        if not isinstance(verdict, Verdict):
            log.error("gossip validator returned %r, not a Verdict; rejecting", verdict)
            verdict = Verdict.REJECT
        if verdict is Verdict.REJECT:
            self._host.penalise(forwarder, penalties.INVALID, f"invalid {item.NAME}")
        elif verdict is Verdict.ACCEPT and isinstance(item, Block):
            self._host.merit.served(forwarder)  # first to bring us a valid block: slot priority
        return verdict

    def listen(self, size: int = 10_000) -> trio.MemoryReceiveChannel[Delivered]:
        """Every accepted message from now on, in order (tools and tests that watch the
        topics; the node acts in its validators). A full channel drops, counted."""
        send, receive = trio.open_memory_channel[Delivered](size)
        self._listeners.append(send)
        return receive

    async def _drain(self, kind: TopicKind, sub: Any) -> None:
        """Empty py-libp2p's 32-slot subscription queue continuously (a full one drops)."""
        while True:
            msg = await sub.get()
            if not self._listeners:
                continue
            try:
                data = bytes(msg.data)
                delivered = Delivered(kind, decode_gossip(kind, data), data, ID(msg.from_id))
            except Exception:  # validated already; a failure here is a bug, not input
                log.exception("accepted gossip message failed to decode again")
                continue
            for listener in list(self._listeners):
                try:
                    listener.send_nowait(delivered)
                except trio.WouldBlock:
                    self.dropped += 1
                    log.warning("gossip listener full; dropped a %s", delivered.item.NAME)
                except trio.BrokenResourceError:
                    self._listeners.remove(listener)

    # ------------------------------------------------------------------ publishing

    async def publish(
        self,
        item: CommitTx
        | Reveal
        | ProofTx
        | Block
        | AggMessage
        | JoinRequest
        | Membership
        | Evidence,
    ) -> None:
        """Publish our message (it passes our own validator too), waiting for queue room."""
        if isinstance(item, Block):
            raw = item.encode()
            if len(raw) > self.config.block_inline_max:
                announce = BlockAnnounce(
                    sha256(raw), item.parent, item.height, item.round, len(raw)
                )
                await self._publish(TopicKind.BLOCKS, announce.encode())
            else:
                await self._publish(TopicKind.BLOCKS, raw)
            return
        await self._publish(TopicKind.ROUND, item.encode())

    async def publish_raw(self, kind: TopicKind, data: bytes) -> None:
        """Publish already-encoded bytes (tests, relaying); same limits as `publish`."""
        await self._publish(kind, data)

    async def _publish(self, kind: TopicKind, data: bytes) -> None:
        if len(data) > MAX_GOSSIP_PAYLOAD:
            raise ValueError(f"{len(data)} bytes is over the gossip limit of {MAX_GOSSIP_PAYLOAD}")
        await self._wait_for_room()
        await self.pubsub.publish(self.topics[kind], data)

    async def _wait_for_room(self) -> None:
        """Backpressure: py-libp2p drops RPCs when a peer's queue is full, so wait instead.

        A peer whose queue stays full for `publish_wait_s` (a slow reader) is marked slow
        and no longer holds publishing up until its queue drains: it loses messages,
        honest fast peers do not.
        """
        high = self.config.queue_high_water

        def full() -> list[ID]:
            queues = list(self.pubsub.peer_queues.items())
            for peer, q in queues:
                if peer in self._slow and len(q) < high // 2:
                    self._slow.discard(peer)
            return [p for p, q in queues if len(q) >= high and p not in self._slow]

        with trio.move_on_after(self.config.publish_wait_s):
            while full():
                await trio.sleep(0.002)
            return
        stuck = full()
        self._slow.update(stuck)
        log.warning("publish: %d slow peer(s) will lose messages: %s", len(stuck), stuck)

    def mesh_peers(self, kind: TopicKind) -> set[ID]:
        return set(self.router.mesh.get(self.topics[kind], set()))

    def topic_peers(self, kind: TopicKind) -> set[ID]:
        return set(self.pubsub.peer_topics.get(self.topics[kind], set()))
