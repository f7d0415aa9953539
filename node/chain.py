"""The node's chain: the store, fork choice and complete block validation.

Validation needs the prover (zk verification, the commitment of a revealed model,
its plain re-evaluation), which runs in worker processes; this module gathers those
answers asynchronously first, then hands them to the pure `consensus.rules.check_block`
as lookups, so the rule itself stays a function of values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from consensus import rules
from consensus.crypto import sha256
from consensus.errors import ForkChoiceError, InvalidError
from consensus.forkchoice import ForkChoice
from consensus.rules import ParentInfo
from consensus.types import Block, EvalBatch, Genesis, chain_id
from prover.client import Commit, Evaluate, Job, Verify
from prover.worker import WorkerError, WorkerPool
from storage import BlockMeta, ChainStore

log = logging.getLogger("zkpot.chain")


@dataclass(frozen=True)
class Applied:
    block_hash: bytes
    height: int
    head_changed: bool


class ProofChecker:
    """zk verification in the pool, with verdicts cached by (proof, batch, C, k)."""

    def __init__(self, pool: WorkerPool, artifacts: Path, timeout_s: float) -> None:
        self.pool = pool
        self.artifacts = artifacts
        self.timeout_s = timeout_s
        self._cache: dict[bytes, tuple[bool, str]] = {}

    @staticmethod
    def _key(proof: bytes, batch: EvalBatch, commitment: bytes, k: int) -> bytes:
        return sha256(sha256(proof) + batch.hash() + sha256(commitment) + k.to_bytes(4, "big"))

    async def check(
        self, proof: bytes, batch: EvalBatch, commitment: bytes, k: int
    ) -> tuple[bool, str]:
        key = self._key(proof, batch, commitment, k)
        if key in self._cache:
            return self._cache[key]
        try:
            v = await self.pool.run(
                Verify(str(self.artifacts), proof, batch.encode(), commitment, k),
                timeout=self.timeout_s,
            )
        except WorkerError as exc:
            return False, f"verification did not complete: {exc}"  # not cached: may be transient
        self._cache[key] = (v.ok, v.reason)
        if len(self._cache) > 100_000:
            self._cache.clear()
        return v.ok, v.reason


class Chain:
    def __init__(self, store: ChainStore, genesis: Genesis, initial_model: bytes) -> None:
        self.store = store
        self.genesis = genesis
        self.cid = chain_id(genesis)
        if sha256(initial_model) != genesis.initial_model_hash:
            raise ValueError("initial model does not match the genesis initial_model_hash")
        store.init_genesis(self.cid, genesis.encode())
        store.put_blob(initial_model)
        self.forks = ForkChoice(self.cid, genesis.finality_depth)
        metas = sorted(store.iter_blocks(), key=lambda hm: hm[1].height)
        for h, meta in metas:
            if h == self.cid:
                continue
            parent = store.get_meta(meta.parent)
            assert parent is not None
            try:
                self.forks.on_block(h, meta.parent, meta.score - parent.score)
            except ForkChoiceError as exc:
                log.info("stored block %s stays off fork choice: %s", h.hex()[:16], exc)
        # Finality is irreversible: the persisted decision wins over what replay gives.
        self.forks.restore_finalized(store.finalized())
        if self.forks.head != store.head():
            log.warning(
                "fork choice head differs from the stored head after replay; adopting %s",
                self.forks.head.hex()[:16],
            )
            store.set_head(self.forks.head)
        self._lock = trio.Lock()

    # ---------------------------------------------------------------- reading

    @property
    def head(self) -> bytes:
        return self.forks.head

    def head_height(self) -> int:
        return self.forks.node(self.forks.head).height

    def has(self, block_hash: bytes) -> bool:
        return block_hash in self.forks or self.store.has_block(block_hash)

    def block(self, block_hash: bytes) -> Block | None:
        raw = self.store.get_block(block_hash)
        if raw is None or block_hash == self.cid:
            return None
        return Block.decode(raw)

    def parent_info(self, block_hash: bytes) -> ParentInfo | None:
        if block_hash == self.cid:
            return ParentInfo(self.cid, -1, 0)
        b = self.block(block_hash)
        meta = self.store.get_meta(block_hash)
        if b is None or meta is None:
            return None
        return ParentInfo(block_hash, b.round, meta.height)

    def model_of(self, block_hash: bytes) -> bytes:
        """The global model a block carries (the genesis's initial model for the genesis)."""
        if block_hash == self.cid:
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

    # ---------------------------------------------------------------- validation

    async def validate(
        self, block: Block, model: bytes, checker: ProofChecker, pool: WorkerPool, timeout_s: float
    ) -> int:
        """Complete validation; returns the proposer's score or raises InvalidError.

        Every cheap rule runs first (with the prover's answers stubbed as "fine"), so
        a peer's junk block never reaches the verification pool.
        """
        parent = self.parent_info(block.parent)
        if parent is None:
            raise InvalidError("Block: parent is unknown")
        proposer_proof = next((p for p in block.proofs if p.participant == block.proposer), None)
        if proposer_proof is None:
            raise InvalidError("Block: the proposer has no proof in the block")
        claimed = proposer_proof.k
        rules.check_block(
            self.genesis,
            self.cid,
            parent,
            block,
            model,
            lambda *a: True,
            lambda m: proposer_proof.commitment,
            lambda m, b: claimed,
        )
        verdicts: dict[tuple[bytes, bytes, int], bool] = {}
        answers: dict[str, object] = {}
        failures: list[str] = []
        arch = self.genesis.task.architecture
        artifacts = str(checker.artifacts)
        batch = block.reveal.batch.encode()

        async def verify_one(proof: bytes, commitment: bytes, k: int) -> None:
            ok, _ = await checker.check(proof, block.reveal.batch, commitment, k)
            verdicts[(proof, commitment, k)] = ok

        async def job(name: str, j: Job[object]) -> None:
            # Each job reports its own failure: an exception group out of the nursery
            # would escape every `except` the callers have.
            try:
                answers[name] = await pool.run(j, timeout=timeout_s)
            except WorkerError as exc:
                failures.append(f"{name}: {exc}")

        async with trio.open_nursery() as nursery:
            for p in block.proofs:
                nursery.start_soon(verify_one, p.proof, p.commitment, p.k)
            nursery.start_soon(job, "commit", Commit(artifacts, arch, model))
            nursery.start_soon(job, "evaluate", Evaluate(artifacts, arch, model, batch))
        if failures:
            raise InvalidError(
                f"Block: the revealed model cannot be checked: {'; '.join(failures)}"
            )
        return rules.check_block(
            self.genesis,
            self.cid,
            parent,
            block,
            model,
            lambda proof, b, c, k: verdicts.get((proof, c, k), False),
            lambda m: answers["commit"],  # type: ignore[arg-type,return-value]
            lambda m, b: answers["evaluate"],  # type: ignore[arg-type,return-value]
        )

    # ---------------------------------------------------------------- applying

    async def apply(self, block: Block, raw: bytes, model: bytes, score: int) -> Applied:
        """Store a validated block and its model, then let fork choice take it.

        The store is written first (one atomic batch, head included), so memory never
        runs ahead of disk: a failed write leaves fork choice as it was.
        """
        async with self._lock:
            h = sha256(raw)
            if h in self.forks:
                return Applied(h, self.forks.node(h).height, False)
            node, becomes_head = self.forks.preview(h, block.parent, score)  # ForkChoiceError
            self.store.put_blob(model)
            self.store.put_block(
                h, raw, BlockMeta(block.parent, node.height, node.score), new_head=becomes_head
            )
            self.forks.on_block(h, block.parent, score)
            if self.store.finalized() != self.forks.finalized:
                self.store.set_finalized(self.forks.finalized)
            return Applied(h, node.height, becomes_head)
