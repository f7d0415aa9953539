"""A block's and a proof's expensive checks answered by plain functions, for tests.

The node answers consensus.checks values in its worker pool (node.checker); the rule
tests replay the same rules with hash stand-ins or real ezkl calls given as functions:
- `ProofVerifier(proof, batch, commitment, k) -> bool`: the zk verification;
- `CommitmentFn(model_blob) -> bytes`: the weight commitment of a revealed model;
- `Evaluator(model_blob, batch) -> int`: the plain quantised re-evaluation of k;
- `AggregateCommitmentFn(model_blob, remainder, weight_sum) -> bytes`: C(S*M + R).
A function that raises is a verdict (InvalidError), as a failed worker check is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from consensus.blocks import ParentInfo, conclude, on_block
from consensus.checks import (
    Answer,
    Check,
    CommitAggregate,
    CommitModel,
    EvaluateModel,
    MaskOf,
    ServerStep,
    UpdateHolds,
    VerifyProof,
)
from consensus.crypto import sha256, short
from consensus.errors import InvalidError
from consensus.rules import PROOF_FAILS, proof_check
from consensus.types import Block, CommitTx, EvalBatch, Genesis, ProofTx, Reveal

ProofVerifier = Callable[[bytes, EvalBatch, bytes, int], bool]
CommitmentFn = Callable[[bytes], bytes]
Evaluator = Callable[[bytes, EvalBatch], int]
AggregateCommitmentFn = Callable[[bytes, bytes, int], bytes]  # (M blob, R, S) -> C(S*M + R)


def contained_call(fn: Callable[..., object], *args: object) -> object:
    """Injected functions (prover, evaluator) are outside consensus: any failure is a verdict."""
    try:
        return fn(*args)
    except Exception as exc:
        raise InvalidError(f"check failed: {type(exc).__name__}: {exc}") from None


def check_proof_tx(
    genesis: Genesis,
    chain_id: bytes,
    reveal: Reveal,
    commit: CommitTx,
    tx: ProofTx,
    verify: ProofVerifier,
) -> None:
    """`proof_check`, then the verification answered by a plain function (tests, tools)."""
    check = proof_check(genesis, chain_id, reveal, commit, tx)
    if not contained_call(verify, check.proof, check.batch, check.commitment, check.k):
        raise InvalidError(PROOF_FAILS)


def answer_with(
    checks: Sequence[Check],
    blobs: Mapping[bytes, bytes],
    verify: ProofVerifier,
    commitment_of: CommitmentFn,
    evaluate: Evaluator,
    commit_aggregate: AggregateCommitmentFn | None = None,
    evidence_check: Callable[[UpdateHolds | MaskOf], Answer] | None = None,
    server_step: Callable[[ServerStep, Mapping[bytes, bytes]], bool] | None = None,
) -> dict[Check, Answer]:
    """Answers from plain functions (tests, tools); a raising function is an InvalidError.
    `blobs` holds the model blobs the checks name, by hash."""
    answers: dict[Check, Answer] = {}
    for c in checks:
        if isinstance(c, ServerStep):
            if server_step is not None:
                answers[c] = bool(contained_call(server_step, c, blobs))
            continue
        if isinstance(c, VerifyProof):
            answers[c] = bool(contained_call(verify, c.proof, c.batch, c.commitment, c.k))
            continue
        if isinstance(c, UpdateHolds | MaskOf):
            if evidence_check is not None:
                answers[c] = contained_call(evidence_check, c)  # type: ignore[assignment]
            continue
        blob = blobs.get(c.model_hash)
        if blob is None:
            raise InvalidError(f"Block: model blob {short(c.model_hash, 12)} is not available")
        if isinstance(c, CommitModel):
            answers[c] = contained_call(commitment_of, blob)  # type: ignore[assignment]
        elif isinstance(c, EvaluateModel):
            answers[c] = contained_call(evaluate, blob, c.batch)  # type: ignore[assignment]
        elif isinstance(c, CommitAggregate) and commit_aggregate is not None:
            answers[c] = contained_call(commit_aggregate, blob, c.remainder, c.weight_sum)  # type: ignore[assignment]
    return answers


def check_block(
    genesis: Genesis,
    chain_id: bytes,
    parent: ParentInfo,
    block: Block,
    model_blob: bytes,
    verify: ProofVerifier,
    commitment_of: CommitmentFn,
    evaluate: Evaluator,
    *,
    parent_model: bytes = b"",
    commit_aggregate: AggregateCommitmentFn | None = None,
) -> int:
    """`on_block`, answered by plain functions, then `conclude`: the block's score."""
    pending = on_block(genesis, chain_id, parent, block)
    if sha256(model_blob) != block.model_hash:
        raise InvalidError("Block: the model blob does not match model_hash")
    blobs = {block.model_hash: model_blob, parent.model_hash: parent_model}
    answers = answer_with(pending.checks, blobs, verify, commitment_of, evaluate, commit_aggregate)
    return conclude(pending, answers)
