"""Fork choice: the heaviest chain by cumulative proven score, never across finality.

A block's weight is its proposer's proven k (at least 1, so a child is always
strictly heavier than its parent). The head is the block with the greatest
cumulative score among those descending from the finalized block; equal scores
go to the lower block hash (bytewise). The block at height `head.height -
finality_depth` on the head's chain is final: from then on no block that does
not descend from it is accepted. Given the same blocks, the head is the same
whatever order they arrive in, as long as no arrival order finalizes a block
another order would not (finality is irreversible by design).

`ForkChoice` is deterministic bookkeeping over values, like the Ethereum spec's
`Store` with `on_block`: no I/O, no clock. The node persists what it decides.
"""

from __future__ import annotations

import enum
from collections.abc import Container
from dataclasses import dataclass

from consensus.crypto import HASH_LEN, ZERO_HASH, short
from consensus.errors import ForkChoiceError


@dataclass(frozen=True)
class ChainNode:
    hash: bytes
    parent: bytes
    height: int
    score: int  # cumulative


def preference(score: int, block_hash: bytes) -> tuple[int, bytes]:
    """Fork choice's order as a sort key, the smallest the best head: the greater
    cumulative score, then the lower hash. Sync orders the heads peers claim by it too."""
    return (-score, block_hash)


def is_better(a: ChainNode, b: ChainNode) -> bool:
    """True iff `a` should be head rather than `b`."""
    return preference(a.score, a.hash) < preference(b.score, b.hash)


class Placement(enum.Enum):
    """Where a block received stands with this node, before any of its rules is checked."""

    NEW = "new"  # its parent is applied and above finality: validate it now
    AFTER_PARENT = "after its parent"  # its parent is being validated: validate it after
    KNOWN = "known"  # applied already
    IN_FLIGHT = "in flight"  # being validated right now: wait for that verdict
    REFUSED = "refused"  # refused before (invalid, or fork choice could not take it)
    ORPHAN = "parent unknown"  # fetch the parent first (sync)
    BELOW_FINALITY = "conflicts with finality"  # can never be placed: refuse it

    @property
    def importable(self) -> bool:
        return self in (Placement.NEW, Placement.AFTER_PARENT)


def placement(
    forks: ForkChoice,
    block_hash: bytes,
    parent: bytes,
    refused: Container[bytes],
    in_flight: Container[bytes],
) -> Placement:
    """The one answer to "can this block be placed now", for gossip, sync and our own
    blocks alike; what to do about a refusal is the caller's (node.importer.admit)."""
    if block_hash in forks:
        return Placement.KNOWN
    if block_hash in refused:
        return Placement.REFUSED
    if block_hash in in_flight:
        return Placement.IN_FLIGHT
    if parent in in_flight:
        return Placement.AFTER_PARENT
    if parent not in forks:
        return Placement.ORPHAN
    if not forks.descends_from(parent, forks.finalized):
        return Placement.BELOW_FINALITY
    return Placement.NEW


class ForkChoice:
    def __init__(self, genesis_hash: bytes, finality_depth: int) -> None:
        if len(genesis_hash) != HASH_LEN:
            raise ValueError("genesis hash must be 32 bytes")
        if finality_depth < 1:
            raise ValueError("finality_depth must be >= 1")
        root = ChainNode(genesis_hash, ZERO_HASH, 0, 0)
        self.finality_depth = finality_depth
        self.nodes: dict[bytes, ChainNode] = {genesis_hash: root}
        self.genesis = genesis_hash
        self.head = genesis_hash
        self.finalized = genesis_hash

    def node(self, block_hash: bytes) -> ChainNode:
        try:
            return self.nodes[block_hash]
        except KeyError:
            raise ForkChoiceError(f"unknown block {block_hash.hex()}") from None

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self.nodes

    def ancestor_at(self, block_hash: bytes, height: int) -> bytes:
        node = self.node(block_hash)
        if not 0 <= height <= node.height:
            raise ValueError(f"height {height} is not on the chain of a block at {node.height}")
        while node.height > height:
            node = self.nodes[node.parent]
        return node.hash

    def descends_from(self, block_hash: bytes, ancestor: bytes) -> bool:
        """True iff `ancestor` is `block_hash` or one of its ancestors."""
        a = self.node(ancestor)
        n = self.node(block_hash)
        return n.height >= a.height and self.ancestor_at(block_hash, a.height) == ancestor

    def is_final(self, block_hash: bytes) -> bool:
        return self.descends_from(self.finalized, block_hash)

    def preview(self, block_hash: bytes, parent: bytes, k: int) -> tuple[ChainNode, bool]:
        """What `on_block` would do, without doing it: (the node, whether it becomes head).

        Lets the shell persist a block before fork choice takes it, so memory never
        runs ahead of the store. Raises ForkChoiceError exactly when `on_block` would.
        """
        if block_hash in self.nodes:
            return self.nodes[block_hash], False
        self._check_placeable(block_hash, parent, k)
        p = self.nodes[parent]
        node = ChainNode(block_hash, parent, p.height + 1, p.score + k)
        return node, is_better(node, self.nodes[self.head])

    def restore_finalized(self, block_hash: bytes) -> None:
        """Re-adopt a finality decision taken before a restart (it only ever moves forward).

        Replaying stored blocks by height can finalize less than the live node had;
        finality is irreversible, so the persisted decision wins when it is consistent.
        """
        if block_hash not in self.nodes or not self.descends_from(block_hash, self.finalized):
            return
        if self.node(block_hash).height <= self.node(self.finalized).height:
            return
        self.finalized = block_hash
        if not self.descends_from(self.head, block_hash):
            viable = [n for n in self.nodes.values() if self.descends_from(n.hash, block_hash)]
            best = viable[0]
            for n in viable[1:]:
                if is_better(n, best):
                    best = n
            self.head = best.hash

    def _check_placeable(self, block_hash: bytes, parent: bytes, k: int) -> None:
        if k < 1:
            raise ForkChoiceError("a block's proven score must be at least 1")
        if parent not in self.nodes:
            raise ForkChoiceError(f"parent {parent.hex()} is unknown; fetch it first")
        if not self.descends_from(parent, self.finalized):
            fin = self.nodes[self.finalized]
            raise ForkChoiceError(
                f"block {short(block_hash, 16)}… does not descend from the finalized block "
                f"{short(fin.hash, 16)}… at height {fin.height}; reorgs never cross finality"
            )

    def on_block(self, block_hash: bytes, parent: bytes, k: int) -> ChainNode:
        """Add a validated block whose proposer proved `k`; returns its node.

        Raises ForkChoiceError for an unknown parent or a block that conflicts
        with finality; the state is unchanged then. Re-adding a block is a no-op.
        """
        if len(block_hash) != HASH_LEN:
            raise ValueError("block hash must be 32 bytes")
        if block_hash in self.nodes:
            return self.nodes[block_hash]
        self._check_placeable(block_hash, parent, k)
        p = self.nodes[parent]
        node = ChainNode(block_hash, parent, p.height + 1, p.score + k)
        self.nodes[block_hash] = node
        if is_better(node, self.nodes[self.head]):
            self.head = block_hash
            self._advance_finality()
        return node

    def _advance_finality(self) -> None:
        head = self.nodes[self.head]
        target = head.height - self.finality_depth
        if target > self.nodes[self.finalized].height:
            self.finalized = self.ancestor_at(self.head, target)
