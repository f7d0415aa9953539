"""The chain's two gossip topics as wire values: names, payload types, decoding, verdicts.

Free of py-libp2p's pubsub and of the node's state, so the node, the tests and an
independent client can use them without a host (p2p.gossip runs the topics).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from libp2p.peer.id import ID

from consensus.crypto import sha256
from consensus.encoding import Bytes, UInt, Wire, peek_tag, wire
from consensus.errors import DecodeError
from consensus.secagg import (
    AggMessage,
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
    VectorPart,
)
from consensus.types import Block, CommitTx, Evidence, JoinRequest, Membership, ProofTx, Reveal

# Largest gossip payload: a Reveal (536 672 bytes) fits; py-libp2p silently drops
# frames above ~1 MiB, so everything bigger goes over sync streams.
MAX_GOSSIP_PAYLOAD = 640 * 1024


def message_id(msg: Any) -> bytes:
    """The 32-byte sha256 of the payload alone: one object is one message, whoever sent it."""
    return sha256(bytes(msg.data))


@dataclass(frozen=True)
class BlockAnnounce(Wire):
    """Announces a block too large to gossip; fetch it by hash over sync."""

    TAG = 20
    NAME = "BlockAnnounce"
    MAX_BYTES = 256

    block_hash: bytes = wire(Bytes(32, 32))
    parent: bytes = wire(Bytes(32, 32))
    height: int = wire(UInt(1, 2**62))
    round: int = wire(UInt(0, 2**20 - 1))
    size: int = wire(UInt(1, Block.MAX_BYTES))


GossipItem = (
    CommitTx
    | Reveal
    | ProofTx
    | Block
    | BlockAnnounce
    | AggMessage
    | JoinRequest
    | Membership
    | Evidence
)

ROUND_TYPES: dict[int, type[Wire]] = {
    CommitTx.TAG: CommitTx,
    Reveal.TAG: Reveal,
    ProofTx.TAG: ProofTx,
    # protocol v3: changes of the participant set (consensus.membership)
    JoinRequest.TAG: JoinRequest,
    Membership.TAG: Membership,
    # protocol v2's aggregation round (consensus.secagg)
    Selection.TAG: Selection,
    MaskedUpdate.TAG: MaskedUpdate,
    Complete.TAG: Complete,
    Unmask.TAG: Unmask,
    Dispute.TAG: Dispute,
    PairReveal.TAG: PairReveal,
    SeedShare.TAG: SeedShare,
    VectorPart.TAG: VectorPart,  # v7: the later parts of a large masked vector
    # protocol v5: proven misbehaviour (consensus.evidence)
    Evidence.TAG: Evidence,
}
BLOCK_TYPES: dict[int, type[Wire]] = {Block.TAG: Block, BlockAnnounce.TAG: BlockAnnounce}


class Verdict(enum.Enum):
    ACCEPT = "accept"  # relay and deliver
    REJECT = "reject"  # invalid: drop and penalise the forwarder
    IGNORE = "ignore"  # not useful now (duplicate, too early): drop, no penalty


# The node's check of one decoded message; `forwarder` is the peer that sent it to us.
# (the decoded item, its raw bytes as received, the forwarding peer): the bytes travel
# with the item so no validator encodes it again to hash or store it
Validator = Callable[[GossipItem, bytes, ID], Awaitable[Verdict]]


async def accept_all(item: GossipItem, raw: bytes, forwarder: ID) -> Verdict:
    """Default validator: the canonical decode alone (the node installs the real one)."""
    return Verdict.ACCEPT


class TopicKind(enum.Enum):
    ROUND = "round"
    BLOCKS = "blocks"


def topic_name(chain_id: bytes, kind: TopicKind) -> str:
    return f"/zkpot/{chain_id.hex()}/{kind.value}/1"


def decode_gossip(kind: TopicKind, data: bytes) -> GossipItem:
    """Decode one payload of a topic; raises only `DecodeError`."""
    if len(data) > MAX_GOSSIP_PAYLOAD:
        raise DecodeError(f"gossip payload of {len(data)} bytes exceeds {MAX_GOSSIP_PAYLOAD}")
    types = ROUND_TYPES if kind is TopicKind.ROUND else BLOCK_TYPES
    tag = peek_tag(data)
    cls = types.get(tag) if tag is not None else None
    if cls is None:
        raise DecodeError(f"type tag {tag!r} is not allowed on the {kind.value} topic")
    item: GossipItem = cls.decode(data)  # type: ignore[assignment]
    return item
