"""The round clock: pure arithmetic over the genesis timing, in integer milliseconds.

A round is *opened* by each node at `opened`: round 0 at genesis_ms; round r+1 as
soon as the node knows a block of round r (its head's round is r), or when the
publisher's valid reveal of a later round shows it fell behind, or at the latest
`round_ms` after round r opened (`round_end`). Within a round, counted from when
this node opened it: commits are due by commit_deadline = opened + commit_ms;
proofs by proof_deadline = commit_deadline + proof_ms; the proposer of rank i
(1-based) may propose from proposal_time = proof_deadline + (i-1) * fallback_ms.
Every one of these is an upper bound: a phase ends as soon as its inputs are in
(consensus.policy). Round r evaluates held-out batch r, so the chain has
eval_plan.num_batches rounds. Validity never reads a clock: these times only say
when an honest node acts.

Because each round lasts at most round_ms, round r opens no later than the slot
genesis_ms + r * round_ms (`slot_round` is a lower bound of the network's round).
"""

from __future__ import annotations

from consensus.errors import InvalidError
from consensus.types import Genesis, Timing


def check_timing(timing: Timing) -> None:
    """Every proposer rank must get its turn before the round's time runs out."""
    last_proposal = timing.commit_ms + timing.proof_ms + (timing.max_rank - 1) * timing.fallback_ms
    if last_proposal >= timing.round_ms:
        raise InvalidError(
            f"timing: commit_ms + proof_ms + (max_rank-1)*fallback_ms = {last_proposal} ms "
            f"must be shorter than round_ms = {timing.round_ms} ms"
        )


def slot_start(genesis: Genesis, rnd: int) -> int:
    """The latest time round `rnd` opens: round_ms per round since genesis."""
    return genesis.timing.genesis_ms + rnd * genesis.timing.round_ms


def slot_round(genesis: Genesis, now_ms: int) -> int | None:
    """The round whose slot contains `now_ms` (None before genesis): the network is there or later."""
    t = genesis.timing
    if now_ms < t.genesis_ms:
        return None
    return (now_ms - t.genesis_ms) // t.round_ms


def commit_deadline(genesis: Genesis, opened_ms: int) -> int:
    return opened_ms + genesis.timing.commit_ms


def proof_deadline(genesis: Genesis, opened_ms: int) -> int:
    return commit_deadline(genesis, opened_ms) + genesis.timing.proof_ms


def proposal_time(genesis: Genesis, opened_ms: int, rank: int) -> int:
    """When the proposer of `rank` may propose if no better block has arrived."""
    if not 1 <= rank <= genesis.timing.max_rank:
        raise ValueError(f"rank {rank} is outside 1..{genesis.timing.max_rank}")
    return proof_deadline(genesis, opened_ms) + (rank - 1) * genesis.timing.fallback_ms


def round_end(genesis: Genesis, opened_ms: int) -> int:
    """When the next round opens if no block of this one is known first."""
    return opened_ms + genesis.timing.round_ms


def first_round(genesis: Genesis, now_ms: int, head_round: int | None) -> tuple[int, int]:
    """(round, opened) for a node starting at `now_ms` whose head block is of `head_round`.

    Before genesis: round 0 at genesis_ms. Otherwise the later of the slot's round
    (a lower bound of the network's round) and the round after the head's block.
    """
    slot = slot_round(genesis, now_ms)
    if slot is None:
        return 0, genesis.timing.genesis_ms
    after_head = -1 if head_round is None else head_round + 1
    if after_head > slot:
        return after_head, now_ms
    return slot, slot_start(genesis, slot)


def next_round(current: int, head_round: int | None, revealed: int | None) -> int:
    """The round a node should be in, from the round it is in, its head block's round
    (None: the genesis) and the latest round the publisher has validly revealed.

    A round ends once a block of it is known; a node that fell behind joins the round
    the publisher reveals; rounds never go back.
    """
    want = current
    if head_round is not None:
        want = max(want, head_round + 1)
    if revealed is not None:
        want = max(want, revealed)
    return want


def is_last_round(genesis: Genesis, rnd: int) -> bool:
    return rnd == genesis.eval_plan.num_batches - 1


def round_exists(genesis: Genesis, rnd: int) -> bool:
    return 0 <= rnd < genesis.eval_plan.num_batches
