"""Block import, one path for gossip, sync and our own blocks: admit, then complete.

`admit` is the one gate: where the block stands (`forkchoice.placement`, a pure
question) and every cheap rule (`blocks.on_block`, run once), refusing in one
place; it hands back a `CheckedBlock`. `complete` waits for a parent still in
flight, fetches the model by hash, has the checker answer the expensive checks in
the worker pool, takes the score from `conclude`, and applies: the chain stores
the block, fork choice takes it, and `on_applied` tells the round pool. Blocks
that fail are remembered (bounded) so no peer makes this node validate one twice.
Gossip reaches this module through node.blockrelay (relay on `admit`, `complete`
in the background), sync through `import_block`, our own blocks through `import_own`.
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
from consensus.forkchoice import ChainNode, Placement, placement
from consensus.types import Block
from node.chain import Applied, Chain
from node.checker import Checker, CheckIncomplete
from node.interfaces import Net, Sync

log = logging.getLogger("zkpot.node")

MAX_REFUSED = 4096
MAX_FETCHED = 128  # model blobs held between fetch and import (two sync batches)


@dataclass
class Flight:
    """One block's validation in progress, for copies (and children) that arrive meanwhile."""

    block: Block
    done: trio.Event = field(default_factory=trio.Event)
    invalid: InvalidError | None = None


@dataclass(frozen=True)
class CheckedBlock:
    """A block admitted for import: it passed every cheap rule against its parent (applied,
    or `after`: in flight) and its flight is registered; `complete` must follow."""

    block: Block
    raw: bytes
    hash: bytes
    parent: ParentInfo
    pending: blocks.PendingBlock
    flight: Flight
    after: Flight | None  # the parent's validation still running, to wait for


BlockHandler = Callable[[Block], None]
AppliedHandler = Callable[[Block, ChainNode, bool], None]


class BlockImporter:
    def __init__(
        self,
        chain: Chain,
        checker: Checker,
        net: Net,
        sync: Sync,
        want_sync: Callable[[], None],
        on_received: BlockHandler = lambda block: None,
        on_applied: AppliedHandler = lambda block, node, head_changed: None,
    ) -> None:
        self.genesis = chain.genesis
        self.chain_id = chain.chain_id
        self.chain = chain
        self.checker = checker
        self.net = net
        self.sync = sync
        self.refused: OrderedDict[bytes, str] = OrderedDict()  # invalid or unplaceable blocks
        self.own: set[bytes] = set()  # our own publishes pass our validator
        self._inflight: dict[bytes, Flight] = {}  # blocks being validated right now
        self.want_sync = want_sync  # a block arrived whose parent we lack
        self.on_received = on_received  # another's block passed the cheap rules
        self.on_applied = on_applied  # a block is stored (and maybe head)
        self.fetched: OrderedDict[bytes, bytes] = OrderedDict()  # model blobs not stored yet

    def refuse(self, block_hash: bytes, reason: str) -> None:
        self.refused[block_hash] = reason
        while len(self.refused) > MAX_REFUSED:
            self.refused.popitem(last=False)

    def admit(
        self, block: Block, raw: bytes, *, block_hash: bytes | None = None, synced: bool = False
    ) -> CheckedBlock | Placement:
        """The one gate of every block (gossip, sync, our own): where it stands
        (forkchoice.placement) and every cheap rule (blocks.on_block). Refusal happens
        here and only here: a block below finality or breaking a rule is remembered as
        refused (InvalidError for the latter). An orphan by gossip wakes sync; one that
        sync itself fetched (`synced`: in height order from our finalized block) does not
        join our chain, and is refused, so that peer's chain is not fetched again at
        once. An importable block comes back checked, its flight registered; anything
        else, its placement. `block_hash`: sha256(raw), where the caller has it already."""
        h = sha256(raw) if block_hash is None else block_hash
        where = placement(self.chain.forks, h, block.parent, self.refused, self._inflight)
        if where is Placement.BELOW_FINALITY or (where is Placement.ORPHAN and synced):
            self.refuse(h, where.value)
        elif where is Placement.ORPHAN:
            self.want_sync()
        if not where.importable:
            return where
        after = self._inflight.get(block.parent)
        pinfo = self._parent_info(block, after)
        if pinfo is None:  # the in-flight parent's own changes do not hold: it fails
            return Placement.AFTER_PARENT
        try:
            pending = blocks.on_block(self.genesis, self.chain_id, pinfo, block)
        except InvalidError as exc:
            self.refuse(h, str(exc))
            raise
        flight = self._inflight[h] = Flight(block)
        return CheckedBlock(block, raw, h, pinfo, pending, flight, after)

    def validating(self, block_hash: bytes) -> bool:
        """Whether this block's validation is running now (admitted, not completed)."""
        return block_hash in self._inflight

    def _parent_info(self, block: Block, after: Flight | None) -> ParentInfo | None:
        """The parent as the cheap rules need it: applied, or as it will be once applied."""
        if after is None:
            return self.chain.parent_info(block.parent)
        p = after.block
        roster = self.chain.roster_after(p)
        if roster is None:
            return None
        return ParentInfo(block.parent, p.round, p.height, p.model_hash, roster, p.velocity_hash)

    async def complete(
        self, checked: CheckedBlock, sources: list[ID], own: Sequence[bytes] | None = None
    ) -> Applied | None:
        """The expensive checks of an admitted block, then apply it; ends its flight
        whatever happens. `own`: the blobs of our own block (else fetched by hash).
        InvalidError: the block is bad (refused); SyncError: its model could not be
        fetched, CheckIncomplete: a worker could not check it (both may be transient:
        not refused, nobody blamed). None: fork choice cannot take it, or its parent
        failed."""
        h, block = checked.hash, checked.block
        try:
            if checked.after is not None:
                await checked.after.done.wait()
                if checked.after.invalid is not None:  # no honest node builds on it: no blame
                    self.refuse(h, "its parent is invalid")
                    return None
                if not self.chain.has(block.parent):  # fork choice did not take the parent
                    return None
            try:
                if own is None:  # another's block (our own was not received)
                    self.on_received(block)
                    own = [await self.fetch_blob(b, sources) for b in blocks.block_blobs(block)]
                answers = await self.checker.answer(
                    checked.pending.checks, self._blobs(checked.parent, own)
                )
                score = blocks.conclude(checked.pending, answers)
            except InvalidError as exc:
                checked.flight.invalid = exc
                self.refuse(h, str(exc))
                raise
            return await self._apply(block, checked.raw, own, score)
        finally:
            self._inflight.pop(h).done.set()

    async def import_block(self, block: Block, raw: bytes, sources: list[ID]) -> bool:
        """Admit and complete a block sync fetched: True once it is in the chain. A copy
        of a block in flight waits for that validation's verdict instead of repeating it.
        False: not placeable (refused, or an orphan: refused too, see `admit`), or a
        valid block fork choice cannot take."""
        h = sha256(raw)
        checked = self.admit(block, raw, block_hash=h, synced=True)
        if isinstance(checked, CheckedBlock):
            return await self.complete(checked, sources) is not None
        busy = self._inflight.get(h)
        if checked is Placement.IN_FLIGHT and busy is not None:
            await busy.done.wait()
            if busy.invalid is not None:
                raise busy.invalid
        return self.chain.has(h)

    async def import_own(self, block: Block, own: Sequence[bytes]) -> Applied | None:
        """Our own block passes the same gate and checks as anyone's before it is applied;
        `own`: the blobs it names (blocks.block_blobs)."""
        try:
            checked = self.admit(block, block.encode())
            if not isinstance(checked, CheckedBlock):
                log.warning("round %d: our own block is %s", block.round, checked.value)
                return None
            applied = await self.complete(checked, [], own)
        except InvalidError as exc:
            log.error("round %d: our own block is invalid, not proposing: %s", block.round, exc)
            return None
        except CheckIncomplete as exc:
            log.warning("round %d: our own block could not be checked: %s", block.round, exc)
            return None
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
        self.on_applied(block, self.chain.node(applied.block_hash), applied.head_changed)
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
