"""The node's chain: the LevelDB store and fork choice, kept in step.

Only validated blocks reach `apply` (node.importer validates them); the store is
written before fork choice moves, so memory never runs ahead of disk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from consensus import blocks
from consensus.blocks import ParentInfo
from consensus.crypto import sha256, short
from consensus.errors import ForkChoiceError, InvalidError
from consensus.forkchoice import ChainNode, ForkChoice
from consensus.membership import Roster, genesis_roster
from consensus.types import Block, Genesis, chain_id
from storage import BlockMeta, ChainStore

log = logging.getLogger("zkpot.chain")


@dataclass(frozen=True)
class Applied:
    block_hash: bytes
    height: int
    head_changed: bool


class Chain:
    def __init__(self, store: ChainStore, genesis: Genesis, initial_model: bytes) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = chain_id(genesis)
        if sha256(initial_model) != genesis.initial_model_hash:
            raise ValueError("initial model does not match the genesis initial_model_hash")
        store.init_genesis(self.chain_id, genesis.encode())
        store.put_blob(initial_model)
        self.forks = ForkChoice(self.chain_id, genesis.finality_depth)
        metas = sorted(store.iter_blocks(), key=lambda hm: hm[1].height)
        for h, meta in metas:
            if h == self.chain_id:
                continue
            parent = store.get_meta(meta.parent)
            assert parent is not None
            try:
                self.forks.on_block(h, meta.parent, meta.score - parent.score)
            except ForkChoiceError as exc:
                log.info("stored block %s stays off fork choice: %s", short(h, 16), exc)
        # Finality is irreversible: the persisted decision wins over what replay gives.
        self.forks.restore_finalized(store.finalized())
        if self.forks.head != store.head():
            log.warning(
                "fork choice head differs from the stored head after replay; adopting %s",
                short(self.forks.head, 16),
            )
            store.set_head(self.forks.head)
        self._lock = trio.Lock()
        self._rosters: dict[bytes, Roster] = {self.chain_id: genesis_roster(genesis)}

    # ---------------------------------------------------------------- reading

    @property
    def head(self) -> bytes:
        return self.forks.head

    def head_height(self) -> int:
        return self.forks.node(self.forks.head).height

    def node(self, block_hash: bytes) -> ChainNode:
        return self.forks.node(block_hash)

    def has(self, block_hash: bytes) -> bool:
        return block_hash in self.forks or self.store.has_block(block_hash)

    def block(self, block_hash: bytes) -> Block | None:
        raw = self.store.get_block(block_hash)
        if raw is None or block_hash == self.chain_id:
            return None
        return Block.decode(raw)

    def parent_info(self, block_hash: bytes) -> ParentInfo | None:
        if block_hash == self.chain_id:
            return ParentInfo(
                self.chain_id, -1, 0, self.genesis.initial_model_hash, self.roster(self.chain_id)
            )
        b = self.block(block_hash)
        meta = self.store.get_meta(block_hash)
        if b is None or meta is None:
            return None
        return ParentInfo(
            block_hash, b.round, meta.height, b.model_hash, self.roster(block_hash), b.velocity_hash
        )

    def roster(self, block_hash: bytes) -> Roster:
        """The participant set after a stored block (consensus.membership), folded from
        the nearest block whose roster is known; LookupError if a block is missing."""
        path: list[tuple[bytes, Block]] = []
        h = block_hash
        while h not in self._rosters:
            b = self.block(h)
            if b is None:
                raise LookupError(f"block {h.hex()} is not stored")
            path.append((h, b))
            h = b.parent
        roster = self._rosters[h]
        for h, b in reversed(path):
            roster = blocks.roster_after(self.genesis, self.chain_id, roster, b)
            self._rosters[h] = roster
        return roster

    def roster_after(self, block: Block) -> Roster | None:
        """The roster after a block not applied yet (None: its parent is not stored, or
        its changes are not valid on it)."""
        try:
            parent = self.roster(block.parent)
            return blocks.roster_after(self.genesis, self.chain_id, parent, block)
        except (LookupError, InvalidError):
            return None

    def participants(self, parent: bytes, rnd: int) -> frozenset[bytes] | None:
        """Who may commit, prove and propose in round `rnd` on top of `parent` (None: the
        parent is not stored here)."""
        try:
            return self.roster(parent).at(rnd)
        except LookupError:
            return None

    def excluded(self, parent: bytes, rnd: int) -> frozenset[bytes]:
        """Whom no selection of round `rnd` on top of `parent` may include (v5 evidence;
        empty if the parent is not stored here)."""
        try:
            return self.roster(parent).excluded_at(rnd)
        except LookupError:
            return frozenset()

    def known_participants(self, rnd: int) -> frozenset[bytes]:
        """A filter for messages whose parent is not here yet: anyone who is or will be a
        participant by the head's roster (the exact check waits for the parent)."""
        r = self.roster(self.head)
        return r.at(rnd) | r.eventual()

    def model_of(self, block_hash: bytes) -> bytes:
        """The global model a block carries (the genesis's initial model for the genesis)."""
        if block_hash == self.chain_id:
            want = self.genesis.initial_model_hash
        else:
            block = self.block(block_hash)
            if block is None:
                raise LookupError(f"block {block_hash.hex()} is not stored")
            want = block.model_hash
        blob = self.store.get_blob(want)
        if blob is None:
            raise LookupError(f"model blob {want.hex()} is missing from the store")
        return blob

    def velocity_of(self, block_hash: bytes) -> bytes:
        """The server optimizer's velocity blob after a block (v6; b"": zero)."""
        block = None if block_hash == self.chain_id else self.block(block_hash)
        if block is None or not block.velocity_hash:
            return b""
        blob = self.store.get_blob(block.velocity_hash)
        if blob is None:
            raise LookupError(
                f"velocity blob {block.velocity_hash.hex()} is missing from the store"
            )
        return blob

    # ---------------------------------------------------------------- applying

    async def apply(self, block: Block, raw: bytes, blobs: Sequence[bytes], score: int) -> Applied:
        """Store a validated block and its blobs (blocks.block_blobs), then let fork
        choice take it.

        The store is written first (one atomic batch, head included), so memory never
        runs ahead of disk: a failed write leaves fork choice as it was.
        """
        async with self._lock:
            h = sha256(raw)
            if h in self.forks:
                return Applied(h, self.forks.node(h).height, False)
            node, becomes_head = self.forks.preview(h, block.parent, score)  # ForkChoiceError
            for blob in blobs:
                self.store.put_blob(blob)
            self.store.put_block(
                h, raw, BlockMeta(block.parent, node.height, node.score), new_head=becomes_head
            )
            self.forks.on_block(h, block.parent, score)
            if self.store.finalized() != self.forks.finalized:
                self.store.set_finalized(self.forks.finalized)
            return Applied(h, node.height, becomes_head)
