"""Block import, one path for gossip, sync and our own blocks: validate, then apply.

`consensus.blocks.on_block` runs every cheap rule before anything is fetched or
verified; the model is fetched by hash; the checker answers the expensive checks
in the worker pool; `conclude` gives the score; the chain stores the block and
fork choice takes it. Blocks that fail are remembered (bounded) so no peer makes
this node validate one twice. Gossip reaches this module through node.blockrelay,
which decides relay on the cheap rules and runs the import here afterwards.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID

from consensus import blocks
from consensus.blocks import ParentInfo
from consensus.crypto import sha256, short
from consensus.errors import ForkChoiceError, InvalidError
from consensus.types import Block, Genesis
from node.chain import Applied, Chain
from node.checker import Checker, CheckIncomplete
from node.interfaces import Net, Sync
from node.roundpool import RoundPool

log = logging.getLogger("zkpot.node")

MAX_REFUSED = 4096
MAX_FETCHED = 128  # model blobs held between fetch and import (two sync batches)


@dataclass
class Flight:
    """One block's validation in progress, for copies (and children) that arrive meanwhile."""

    block: Block
    done: trio.Event = field(default_factory=trio.Event)
    invalid: InvalidError | None = None


class BlockImporter:
    def __init__(
        self,
        genesis: Genesis,
        cid: bytes,
        chain: Chain,
        checker: Checker,
        pool: RoundPool,
        net: Net,
        sync: Sync,
        want_sync: Callable[[], None],
    ) -> None:
        self.genesis = genesis
        self.cid = cid
        self.chain = chain
        self.checker = checker
        self.pool = pool
        self.net = net
        self.sync = sync
        self.refused: OrderedDict[bytes, str] = OrderedDict()  # invalid or unplaceable blocks
        self.own: set[bytes] = set()  # our own publishes pass our validator
        self._inflight: dict[bytes, Flight] = {}  # blocks being validated right now
        self.want_sync = want_sync  # a block arrived whose parent we lack
        self.fetched: OrderedDict[bytes, bytes] = OrderedDict()  # model blobs not stored yet

    def refuse(self, block_hash: bytes, reason: str) -> None:
        self.refused[block_hash] = reason
        while len(self.refused) > MAX_REFUSED:
            self.refused.popitem(last=False)

    def placeable(self, block: Block, block_hash: bytes) -> bool:
        """Whether the block can be imported now: new, not refused, parent known, above finality."""
        if self.chain.has(block_hash) or block_hash in self.refused:
            return False
        if not self.chain.has(block.parent):
            self.want_sync()
            return False
        forks = self.chain.forks
        if not forks.descends_from(block.parent, forks.finalized):
            self.refuse(block_hash, "conflicts with finality")
            return False
        return True

    async def import_block(self, block: Block, raw: bytes, sources: list[ID]) -> bool:
        """Validate completely and apply. InvalidError: the block is bad (refused here);
        SyncError: its model could not be fetched, CheckIncomplete: a worker could not
        check it (both may be transient: not refused, nobody blamed).
        False: a valid block fork choice cannot take.

        The same block arriving again (several forwarders, gossip and sync at once) while
        it is being validated waits for that one validation instead of repeating it.
        """
        h = sha256(raw)
        busy = self._inflight.get(h)
        if busy is not None:  # the same verdict as that validation, not a second one
            await busy.done.wait()
            if busy.invalid is not None:
                raise busy.invalid
            return self.chain.has(h)
        return await self.fly(self.begin(h, block), raw, h, sources)

    def flight(self, block_hash: bytes) -> Flight | None:
        """The validation of this block in progress, if any."""
        return self._inflight.get(block_hash)

    def begin(self, block_hash: bytes, block: Block) -> Flight:
        """Register a validation before it runs, so copies arriving meanwhile find it;
        `fly` must follow (it ends the flight whatever happens)."""
        flight = self._inflight[block_hash] = Flight(block)
        return flight

    async def fly(
        self, flight: Flight, raw: bytes, h: bytes, sources: list[ID], after: Flight | None = None
    ) -> bool:
        """Run a begun validation: first wait for the parent's (`after`) if it is in flight."""
        try:
            if after is not None:
                await after.done.wait()
                if after.invalid is not None:  # no honest node builds on it: drop, no blame
                    self.refuse(h, "its parent is invalid")
                    return False
            return await self._import(flight.block, raw, h, sources)
        except InvalidError as exc:
            flight.invalid = exc
            raise
        finally:
            self._inflight.pop(h).done.set()

    def parent_for_gossip(
        self, block: Block, block_hash: bytes
    ) -> tuple[ParentInfo, Flight | None] | None:
        """The parent as the cheap rules need it: applied, or being validated right now
        (then also its flight, to wait for). None: not importable now (see `placeable`)."""
        after = self._inflight.get(block.parent)
        if after is not None:
            p = after.block
            roster = self.chain.roster_after(p)
            if roster is None:  # the parent's own changes do not hold: it will be refused
                return None
            return (
                ParentInfo(block.parent, p.round, p.height, p.model_hash, roster, p.velocity_hash),
                after,
            )
        if not self.placeable(block, block_hash):
            return None
        pinfo = self.chain.parent_info(block.parent)
        return None if pinfo is None else (pinfo, None)

    async def _import(self, block: Block, raw: bytes, h: bytes, sources: list[ID]) -> bool:
        pinfo = self.chain.parent_info(block.parent)
        if pinfo is None:
            return False
        try:
            pending = blocks.on_block(self.genesis, self.cid, pinfo, block)
            if self.pool.in_window(block.round):
                self.pool.mark(block.round, "block_received")
            own = [await self.fetch_blob(b, sources) for b in blocks.block_blobs(block)]
            answers = await self.checker.answer(pending.checks, self._blobs(pinfo, own))
            score = blocks.conclude(pending, answers)
        except InvalidError as exc:
            self.refuse(h, str(exc))
            raise
        return await self._apply(block, raw, own, score) is not None

    async def import_own(self, block: Block, own: Sequence[bytes]) -> Applied | None:
        """Our own block passes the same validation as anyone's before it is applied;
        `own`: the blobs it names (blocks.block_blobs)."""
        raw = block.encode()
        pinfo = self.chain.parent_info(block.parent)
        if pinfo is None:
            return None
        try:
            pending = blocks.on_block(self.genesis, self.cid, pinfo, block)
            answers = await self.checker.answer(pending.checks, self._blobs(pinfo, own))
            score = blocks.conclude(pending, answers)
        except InvalidError as exc:
            log.error("round %d: our own block is invalid, not proposing: %s", block.round, exc)
            return None
        except CheckIncomplete as exc:
            log.warning("round %d: our own block could not be checked: %s", block.round, exc)
            return None
        applied = await self._apply(block, raw, own, score)
        if applied is not None:
            self.own.add(applied.block_hash)
        return applied

    def _blobs(self, parent: ParentInfo, own: Sequence[bytes]) -> dict[bytes, bytes]:
        """The blobs a block's checks may name: its own, its parent's model and velocity."""
        found = {sha256(b): b for b in own}
        try:
            if parent.model_hash not in found:
                found[parent.model_hash] = self.chain.model_of(parent.hash)
            if parent.velocity_hash and parent.velocity_hash not in found:
                found[parent.velocity_hash] = self.chain.velocity_of(parent.hash)
        except LookupError as exc:  # not this block's fault
            raise CheckIncomplete(f"the parent's model is not at hand: {exc}") from exc
        return found

    async def _apply(
        self, block: Block, raw: bytes, own: Sequence[bytes], score: int
    ) -> Applied | None:
        try:
            applied = await self.chain.apply(block, raw, own, score)
        except ForkChoiceError as exc:
            self.refuse(sha256(raw), str(exc))
            log.info("block not taken by fork choice: %s", exc)
            return None
        self.pool.on_block_applied(block, self.chain.node(applied.block_hash), applied.head_changed)
        log.info(
            "round %d: block %s at height %d by %s (k=%d)%s",
            block.round,
            short(applied.block_hash, 12),
            applied.height,
            short(block.proposer),
            score,
            " -> new head" if applied.head_changed else "",
        )
        return applied

    async def fetch_blob(self, blob_hash: bytes, peers: list[ID]) -> bytes:
        """From the store, from what was fetched ahead (sync), or from peers (kept a
        while: sync fetches a batch's models before it imports them)."""
        blob = self.chain.store.get_blob(blob_hash) or self.fetched.get(blob_hash)
        if blob is not None:
            return blob
        peers = list(dict.fromkeys([*peers, *self.net.connected_peers()]))
        blob = await self.sync.content_from_any(peers, blob_hash)
        self.fetched[blob_hash] = blob
        while len(self.fetched) > MAX_FETCHED:
            self.fetched.popitem(last=False)
        return blob
