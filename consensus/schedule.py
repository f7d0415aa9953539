"""The round clock: pure arithmetic over the genesis timing, in integer milliseconds.

Round r occupies [start(r), start(r+1)), start(r) = genesis_ms + r * round_ms.
Within it: commits are due at commit_deadline(r) = start(r) + commit_ms; proofs
at proof_deadline(r) = commit_deadline(r) + proof_ms; the proposer of rank i
(1-based) may propose from proposal_time(r, i) = proof_deadline(r) + (i-1) * fallback_ms.
Round r evaluates held-out batch r, so the chain has eval_plan.num_batches rounds.
"""

from __future__ import annotations

from consensus.errors import InvalidError
from consensus.types import Genesis, Timing


def check_timing(timing: Timing) -> None:
    """Every proposer rank must get its turn before the next round starts."""
    last_proposal = timing.commit_ms + timing.proof_ms + (timing.max_rank - 1) * timing.fallback_ms
    if last_proposal >= timing.round_ms:
        raise InvalidError(
            f"timing: commit_ms + proof_ms + (max_rank-1)*fallback_ms = {last_proposal} ms "
            f"must be shorter than round_ms = {timing.round_ms} ms"
        )


def round_start(genesis: Genesis, rnd: int) -> int:
    return genesis.timing.genesis_ms + rnd * genesis.timing.round_ms


def round_at(genesis: Genesis, now_ms: int) -> int | None:
    """The round whose slot contains `now_ms`; None before genesis."""
    t = genesis.timing
    if now_ms < t.genesis_ms:
        return None
    return (now_ms - t.genesis_ms) // t.round_ms


def commit_deadline(genesis: Genesis, rnd: int) -> int:
    return round_start(genesis, rnd) + genesis.timing.commit_ms


def proof_deadline(genesis: Genesis, rnd: int) -> int:
    return commit_deadline(genesis, rnd) + genesis.timing.proof_ms


def proposal_time(genesis: Genesis, rnd: int, rank: int) -> int:
    """When the proposer of `rank` may propose if no better block has arrived."""
    if not 1 <= rank <= genesis.timing.max_rank:
        raise ValueError(f"rank {rank} is outside 1..{genesis.timing.max_rank}")
    return proof_deadline(genesis, rnd) + (rank - 1) * genesis.timing.fallback_ms


def is_last_round(genesis: Genesis, rnd: int) -> bool:
    return rnd == genesis.eval_plan.num_batches - 1


def round_exists(genesis: Genesis, rnd: int) -> bool:
    return 0 <= rnd < genesis.eval_plan.num_batches
