"""Validity rules, as pure functions over values.

Expensive or environment-bound checks are passed in as functions, so this module
stays pure and every rule can be replayed in a test:
- `ProofVerifier(proof, batch, commitment, k) -> bool`: the zk verification;
- `CommitmentFn(model_blob) -> bytes`: the weight commitment of a revealed model;
- `Evaluator(model_blob, batch) -> int`: the plain quantised re-evaluation of k.
Each `check_*` returns None or raises `InvalidError` whose message says which rule broke.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from consensus.crypto import SIG_LEN, SigningKey, sha256, verify_signature
from consensus.errors import InvalidError
from consensus.merkle import depth_for, verify_merkle_proof
from consensus.schedule import check_timing, round_exists
from consensus.types import (
    INPUT_ITEM_BYTES,
    MAX_BATCH_INPUT_BYTES,
    MAX_MERKLE_DEPTH,
    Block,
    CommitTx,
    EvalBatch,
    Genesis,
    ProofTx,
    Reveal,
)

ProofVerifier = Callable[[bytes, EvalBatch, bytes, int], bool]
CommitmentFn = Callable[[bytes], bytes]
Evaluator = Callable[[bytes, EvalBatch], int]

PARTITIONS = ("iid", "dirichlet")
COMMITMENT_MODES = ("polycommit",)
TIEBREAK_DOMAIN = b"zkpot/tiebreak/v1"
BINDING_DOMAIN = b"zkpot/commit/v1"

S = TypeVar("S", CommitTx, Reveal, ProofTx, Block)


# --- signing -----------------------------------------------------------------


def sign(obj: S, key: SigningKey, chain_id: bytes) -> S:
    """Return `obj` with its signature field set by `key` for this chain."""
    unsigned = dataclasses.replace(obj, signature=bytes(SIG_LEN))
    return dataclasses.replace(unsigned, signature=key.sign(unsigned.signing_bytes(chain_id)))


def _check_signature(
    obj: CommitTx | Reveal | ProofTx | Block, signer: bytes, chain_id: bytes
) -> None:
    if not verify_signature(signer, obj.signing_bytes(chain_id), obj.signature):
        raise InvalidError(
            f"{obj.NAME}: bad signature (not signed by {signer.hex()[:16]}… for this chain)"
        )


# --- genesis -----------------------------------------------------------------


def input_elements(genesis: Genesis) -> int:
    """Number of input scalars in one example."""
    return math.prod(genesis.eval_plan.input_shape)


def check_genesis(genesis: Genesis) -> None:
    check_timing(genesis.timing)
    plan = genesis.eval_plan
    batch_bytes = plan.batch_size * input_elements(genesis) * INPUT_ITEM_BYTES
    if batch_bytes > MAX_BATCH_INPUT_BYTES:
        raise InvalidError(
            f"eval_plan: a batch of {plan.batch_size} x {list(plan.input_shape)} int32 inputs is "
            f"{batch_bytes} bytes, over the {MAX_BATCH_INPUT_BYTES}-byte limit; use a smaller batch"
        )
    if depth_for(plan.num_batches) > MAX_MERKLE_DEPTH:
        raise InvalidError(f"eval_plan: {plan.num_batches} batches exceed the Merkle depth limit")
    if plan.num_classes > 256:
        raise InvalidError("eval_plan: labels are one byte, so at most 256 classes")
    if genesis.task.partition not in PARTITIONS:
        raise InvalidError(
            f"task.partition must be one of {PARTITIONS}, not {genesis.task.partition!r}"
        )
    if genesis.task.partition == "dirichlet" and genesis.task.dirichlet_alpha_ppm == 0:
        raise InvalidError("task.dirichlet_alpha_ppm must be > 0 for a dirichlet partition")
    if genesis.circuit.commitment not in COMMITMENT_MODES:
        raise InvalidError(
            f"circuit.commitment must be one of {COMMITMENT_MODES}, not {genesis.circuit.commitment!r}"
        )


# --- evaluation batches and reveals --------------------------------------------


def check_batch_shape(genesis: Genesis, batch: EvalBatch) -> None:
    plan = genesis.eval_plan
    want_inputs = plan.batch_size * input_elements(genesis) * INPUT_ITEM_BYTES
    if len(batch.inputs) != want_inputs:
        raise InvalidError(
            f"EvalBatch: inputs are {len(batch.inputs)} bytes, expected {want_inputs}"
        )
    if len(batch.labels) != plan.batch_size:
        raise InvalidError(f"EvalBatch: {len(batch.labels)} labels, expected {plan.batch_size}")
    bad = [lab for lab in batch.labels if lab >= plan.num_classes]
    if bad:
        raise InvalidError(f"EvalBatch: label {bad[0]} is not below num_classes={plan.num_classes}")


def batch_hash(batch: EvalBatch) -> bytes:
    return batch.hash()


def check_reveal(genesis: Genesis, chain_id: bytes, reveal: Reveal) -> None:
    """A reveal is valid iff it is round r's committed batch, signed by the publisher."""
    if not round_exists(genesis, reveal.round):
        raise InvalidError(
            f"Reveal: round {reveal.round} is beyond the evaluation plan "
            f"({genesis.eval_plan.num_batches} batches)"
        )
    if reveal.batch.index != reveal.round:
        raise InvalidError(
            f"Reveal: round {reveal.round} must reveal batch {reveal.round}, not {reveal.batch.index}"
        )
    check_batch_shape(genesis, reveal.batch)
    if len(reveal.sealed) > len(genesis.participants):
        raise InvalidError("Reveal: more sealed commits than participants")
    if not verify_merkle_proof(
        genesis.eval_plan.merkle_root,
        genesis.eval_plan.num_batches,
        reveal.batch.index,
        batch_hash(reveal.batch),
        reveal.merkle_proof,
    ):
        raise InvalidError(
            f"Reveal: batch {reveal.batch.index} does not match the genesis Merkle root"
        )
    _check_signature(reveal, genesis.publisher, chain_id)


def is_sealed(reveal: Reveal, commit_id: bytes) -> bool:
    return commit_id in reveal.sealed


# --- commits and proofs --------------------------------------------------------


def commit_binding(
    chain: bytes, participant: bytes, rnd: int, parent: bytes, commitment: bytes
) -> bytes:
    """What a CommitTx carries: C bound to its participant, round, parent and chain."""
    return sha256(
        BINDING_DOMAIN + chain + participant + rnd.to_bytes(8, "big") + parent + commitment
    )


def check_commit(genesis: Genesis, chain_id: bytes, tx: CommitTx) -> None:
    """Stateless: whether its parent is known is for the caller (node or block check)."""
    if tx.participant not in genesis.participants:
        raise InvalidError(f"CommitTx: {tx.participant.hex()[:16]}… is not a genesis participant")
    if not round_exists(genesis, tx.round):
        raise InvalidError(f"CommitTx: round {tx.round} is beyond the evaluation plan")
    _check_signature(tx, tx.participant, chain_id)


def check_proof_tx(
    genesis: Genesis,
    chain_id: bytes,
    reveal: Reveal,
    commit: CommitTx,
    tx: ProofTx,
    verify: ProofVerifier,
) -> None:
    """The proof of a sealed commit, for the revealed batch; the reveal must already be valid.

    Public instances come from the reveal's batch, the commit's C and the tx's k,
    never from the message; `verify` is called last, after every cheap check.
    """
    if tx.commit_id != commit.hash():
        raise InvalidError("ProofTx: commit_id does not match the commit given")
    if tx.participant != commit.participant:
        raise InvalidError("ProofTx: signed by someone other than the commit's participant")
    if not tx.round == commit.round == reveal.round:
        raise InvalidError(
            f"ProofTx: rounds differ (proof {tx.round}, commit {commit.round}, reveal {reveal.round})"
        )
    if not is_sealed(reveal, tx.commit_id):
        raise InvalidError("ProofTx: its commit is not in the reveal's sealed set")
    if tx.k > genesis.eval_plan.batch_size:
        raise InvalidError(
            f"ProofTx: k={tx.k} exceeds the batch size {genesis.eval_plan.batch_size}"
        )
    if len(tx.proof) != genesis.circuit.proof_bytes:
        raise InvalidError(
            f"ProofTx: proof is {len(tx.proof)} bytes, this chain's proofs are {genesis.circuit.proof_bytes}"
        )
    if len(tx.commitment) != genesis.circuit.commitment_bytes:
        raise InvalidError(
            f"ProofTx: commitment is {len(tx.commitment)} bytes, expected {genesis.circuit.commitment_bytes}"
        )
    if (
        commit_binding(chain_id, commit.participant, commit.round, commit.parent, tx.commitment)
        != commit.binding
    ):
        raise InvalidError("ProofTx: the disclosed commitment does not open the commit's binding")
    check_commit(genesis, chain_id, commit)
    _check_signature(tx, tx.participant, chain_id)
    if not _call(verify, tx.proof, reveal.batch, tx.commitment, tx.k):
        raise InvalidError("ProofTx: the zk proof does not verify for this batch, commitment and k")


def _call(fn: Callable[..., object], *args: object) -> object:
    """Injected functions (prover, evaluator) are outside consensus: any failure is a verdict."""
    try:
        return fn(*args)
    except Exception as exc:
        raise InvalidError(f"check failed: {type(exc).__name__}: {exc}") from None


# --- ranking -------------------------------------------------------------------


def tiebreak_key(batch_hash: bytes, participant: bytes) -> bytes:
    """Equal scores rank by this hash, ascending.

    Seeded by the round's batch hash: fixed at genesis (Merkle root), unknown to
    participants until the reveal, and out of reach of the previous proposer (a
    parent hash would let it grind ties of the next round).
    """
    return sha256(TIEBREAK_DOMAIN + batch_hash + participant)


@dataclass(frozen=True)
class Ranked:
    rank: int  # 1-based
    participant: bytes
    k: int
    commit_id: bytes


def rank_proofs(batch: EvalBatch, proofs: Iterable[ProofTx]) -> list[Ranked]:
    """Order valid proofs by k descending, then by `tiebreak_key` ascending."""
    seed = batch_hash(batch)
    ordered = sorted(proofs, key=lambda p: (-p.k, tiebreak_key(seed, p.participant)))
    return [Ranked(i + 1, p.participant, p.k, p.commit_id) for i, p in enumerate(ordered)]


# --- blocks --------------------------------------------------------------------


@dataclass(frozen=True)
class ParentInfo:
    """What block validation needs to know of the parent (genesis: round -1, height 0)."""

    hash: bytes
    round: int
    height: int


def block_score(block: Block) -> int:
    """The proven score a block adds to its chain: its proposer's k."""
    for p in block.proofs:
        if p.participant == block.proposer:
            return p.k
    raise InvalidError("Block: the proposer has no proof in the block")


def check_block_header(genesis: Genesis, chain_id: bytes, parent: ParentInfo, block: Block) -> None:
    """Cheap checks first: a peer's garbage is dropped before any proof is verified."""
    if block.parent != parent.hash:
        raise InvalidError("Block: parent hash does not match")
    if block.height != parent.height + 1:
        raise InvalidError(f"Block: height {block.height} should be {parent.height + 1}")
    if block.round <= parent.round:
        raise InvalidError(
            f"Block: round {block.round} does not follow the parent's round {parent.round}"
        )
    if block.reveal.round != block.round:
        raise InvalidError("Block: the reveal is for another round")
    if block.proposer not in genesis.participants:
        raise InvalidError("Block: the proposer is not a genesis participant")
    if block.rank > genesis.timing.max_rank:
        raise InvalidError(f"Block: rank {block.rank} exceeds max_rank {genesis.timing.max_rank}")
    _check_signature(block, block.proposer, chain_id)


def check_block(
    genesis: Genesis,
    chain_id: bytes,
    parent: ParentInfo,
    block: Block,
    model_blob: bytes,
    verify: ProofVerifier,
    commitment_of: CommitmentFn,
    evaluate: Evaluator,
) -> int:
    """Full validation; returns the block's score (proposer's k)."""
    check_block_header(genesis, chain_id, parent, block)
    check_reveal(genesis, chain_id, block.reveal)
    commit_ids = [c.hash() for c in block.commits]
    if any(a >= b for a, b in itertools.pairwise(commit_ids)):
        raise InvalidError("Block: commits must be sorted by commit id, without duplicates")
    commits = dict(zip(commit_ids, block.commits, strict=True))
    if len({c.participant for c in block.commits}) != len(block.commits):
        raise InvalidError("Block: two commits by the same participant")
    for cid, c in commits.items():
        if c.parent != block.parent or c.round != block.round:
            raise InvalidError("Block: a commit is for another parent or round")
        if not is_sealed(block.reveal, cid):
            raise InvalidError("Block: a commit is not in the reveal's sealed set")
        check_commit(genesis, chain_id, c)
    proof_ids = [p.commit_id for p in block.proofs]
    if any(a >= b for a, b in itertools.pairwise(proof_ids)):
        raise InvalidError("Block: proofs must be sorted by commit id, one per commit")
    for p in block.proofs:
        if p.commit_id not in commits:
            raise InvalidError("Block: a proof's commit is not in the block")
    score = block_score(block)
    if score < 1:
        raise InvalidError("Block: the proposer's proven k must be at least 1")
    ranking = rank_proofs(block.reveal.batch, block.proofs)
    mine = next(r for r in ranking if r.participant == block.proposer)
    if mine.rank != block.rank:
        raise InvalidError(
            f"Block: proposer ranks {mine.rank} among the block's proofs, claims {block.rank}"
        )
    if sha256(model_blob) != block.model_hash:
        raise InvalidError("Block: the model blob does not match model_hash")
    proposer_proof = next(p for p in block.proofs if p.participant == block.proposer)
    if _call(commitment_of, model_blob) != proposer_proof.commitment:
        raise InvalidError("Block: the revealed model does not match the proposer's commitment")
    for p in block.proofs:
        check_proof_tx(genesis, chain_id, block.reveal, commits[p.commit_id], p, verify)
    recomputed = _call(evaluate, model_blob, block.reveal.batch)
    if recomputed != score:
        raise InvalidError(
            f"Block: the revealed model scores {recomputed} in the clear, the proof claims {score}"
        )
    return score
