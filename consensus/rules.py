"""Validity rules, as pure functions over values.

Expensive or environment-bound checks are not run here: a rule names them as values
(consensus.checks: the zk verification, a model's commitment, its re-evaluation) for the
shell to answer, so this module stays pure and every rule can be replayed in a test
(tests/support/plaincheck.py answers them with plain functions). Each `check_*` returns
None or raises `InvalidError` whose message says which rule broke. (A little over 300
lines: every message's rules side by side, as the spec lists them.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from consensus import bn254, optimizer
from consensus.checks import VerifyProof
from consensus.crypto import UNSIGNED, SigningKey, sha256, short, verify_signature
from consensus.encoding import Signed
from consensus.errors import InvalidError
from consensus.merkle import depth_for, verify_merkle_proof
from consensus.schedule import check_timing, round_exists
from consensus.selection import rank_key
from consensus.strategy import RULES
from consensus.types import (
    INPUT_ITEM_BYTES,
    MAX_BATCH_INPUT_BYTES,
    MAX_MERKLE_DEPTH,
    POINT_LEN,
    CommitTx,
    EvalBatch,
    Genesis,
    ProofTx,
    Reveal,
    RuleSpec,
)

PARTITIONS = ("iid", "dirichlet")
COMMITMENT_MODES = ("polycommit",)
BINDING_DOMAIN = b"zkpot/commit/v1"


class _SignedObject(Protocol):
    """Any signed protocol object: a frozen dataclass whose last field signs the rest."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def signing_bytes(self, chain_id: bytes) -> bytes: ...


S = TypeVar("S", bound=_SignedObject)


# --- signing -----------------------------------------------------------------


def sign(obj: S, key: SigningKey, chain_id: bytes) -> S:
    """Return `obj` with its signature field set by `key` for this chain."""
    unsigned = dataclasses.replace(obj, signature=UNSIGNED)
    return dataclasses.replace(unsigned, signature=key.sign(unsigned.signing_bytes(chain_id)))


def check_signature(obj: Signed, signer: bytes, chain_id: bytes) -> None:
    if not verify_signature(signer, obj.signing_bytes(chain_id), obj.signature):
        raise InvalidError(
            f"{obj.NAME}: bad signature (not signed by {short(signer, 16)}… for this chain)"
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
    if genesis.rule.name not in RULES:
        raise InvalidError(
            f"rule {genesis.rule.name!r} is not one this node runs (known: {', '.join(RULES)})"
        )
    if genesis.rule.min_members > genesis.rule.max_members:
        raise InvalidError("rule: min_members exceeds max_members")
    if RULES[genesis.rule.name].aggregates:
        check_aggregation(genesis)
    check_server(genesis.rule)
    if genesis.circuit.commitment not in COMMITMENT_MODES:
        raise InvalidError(
            f"circuit.commitment must be one of {COMMITMENT_MODES}, not {genesis.circuit.commitment!r}"
        )


MIN_PRIVATE_MEMBERS = 3  # with two, each member learns the other's model from the sum


def check_aggregation(genesis: Genesis) -> None:
    """What an averaging rule needs of the genesis (docs/protocol.md §10)."""
    agg = genesis.aggregation
    if genesis.rule.min_members < MIN_PRIVATE_MEMBERS:
        raise InvalidError(
            f"rule: min_members must be at least {MIN_PRIVATE_MEMBERS} for an averaging rule "
            "(with two, each member could subtract its own model from the sum)"
        )
    if genesis.rule.max_members > 256:
        raise InvalidError("rule: at most 256 members (the remainder is one byte)")
    if genesis.circuit.commitment_bytes != POINT_LEN:
        raise InvalidError("aggregation: the circuit must commit its parameters in one column")
    if len(agg.basis_hash) != 32 or len(agg.constant) != POINT_LEN or agg.parameters < 1:
        raise InvalidError("aggregation: an averaging rule needs the basis hash, K and the size")


def check_server(rule: RuleSpec) -> None:
    """The server optimizer and the free-rider guard (v6) are an averaging rule's."""
    server = optimizer.server_of(rule)  # InvalidError for an unknown name or bad beta
    aggregates = RULES[rule.name].aggregates
    if (server is not None or rule.guard_members) and not aggregates:
        raise InvalidError(f"rule: {rule.name} has no aggregate for a server step or a guard")
    if rule.guard_members and rule.guard_members < rule.min_members:
        raise InvalidError(
            f"rule: guard_members {rule.guard_members} is below min_members {rule.min_members} "
            "(the guard would leave too few members for an aggregate)"
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
    check_signature(reveal, genesis.publisher, chain_id)


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


def check_commit(
    genesis: Genesis, chain_id: bytes, tx: CommitTx, participants: Collection[bytes]
) -> None:
    """`participants`: the set of the commit's round on top of its parent (the caller
    knows the parent: consensus.membership), or, before the parent is known, a superset
    the caller trusts to filter spam."""
    if tx.participant not in participants:
        raise InvalidError(
            f"CommitTx: {short(tx.participant, 16)}… is not a participant of round {tx.round}"
        )
    if not round_exists(genesis, tx.round):
        raise InvalidError(f"CommitTx: round {tx.round} is beyond the evaluation plan")
    check_mask_key(genesis, tx)
    check_signature(tx, tx.participant, chain_id)


def check_mask_key(genesis: Genesis, tx: CommitTx) -> None:
    """Under an aggregating rule the mask key is a real point of the group (v4): a key
    that is not one would make every honest member's masking fail mid-aggregation and
    get them dropped as silent; refused here, at the commit, it costs only its sender."""
    if not RULES[genesis.rule.name].aggregates:
        if tx.mask_key:
            raise InvalidError("CommitTx: the winner rule's commits carry no mask key")
        return
    if len(tx.mask_key) != POINT_LEN:
        raise InvalidError(
            f"CommitTx: the mask key is {len(tx.mask_key)} bytes, a compressed point is {POINT_LEN}"
        )
    try:
        point = bn254.decompress(tx.mask_key)
    except InvalidError as exc:
        raise InvalidError(f"CommitTx: the mask key is not a curve point ({exc})") from None
    if point is None:
        raise InvalidError("CommitTx: the mask key is the identity point (it would mask nothing)")


def proof_check(
    genesis: Genesis, chain_id: bytes, reveal: Reveal, commit: CommitTx, tx: ProofTx
) -> VerifyProof:
    """Every cheap rule of a sealed commit's proof; returns the zk verification still to do.

    The reveal and the commit must already be valid (check_reveal, check_commit). Public
    instances come from the reveal's batch, the commit's C and the tx's k, never the message.
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
    check_signature(tx, tx.participant, chain_id)
    return VerifyProof(tx.proof, reveal.batch, tx.commitment, tx.k)


PROOF_FAILS = "ProofTx: the zk proof does not verify for this batch, commitment and k"


# --- ranking -------------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    rank: int  # 1-based
    participant: bytes
    k: int
    commit_id: bytes


def rank_proofs(batch: EvalBatch, proofs: Iterable[ProofTx]) -> list[Ranked]:
    """Order valid proofs by `selection.rank_key`: k descending, then the tiebreak."""
    seed = batch_hash(batch)
    ordered = sorted(proofs, key=lambda p: rank_key(seed, p.k, p.participant))
    return [Ranked(i + 1, p.participant, p.k, p.commit_id) for i, p in enumerate(ordered)]
