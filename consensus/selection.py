"""Who contributes to the next global model, with which integer weights: pure functions.

A round's facts are public once its proofs are in: each valid proof's participant,
proven k and weight commitment, and the parent (global) model's own k on the same
revealed batch and its commitment (every node computes both from the public parent).
The rules below decide from those alone, integers only, so every node and the
learning benchmark (bench/learning.py) run the very same selection.

- `winner` (protocol v1): the best-ranked proof alone.
- `best_share` (protocol v2's default, chosen with bench/learning.py): the best-ranked
  keep_percent of the proofs whose model is not the parent resubmitted, at least
  min_members (a smaller set would let its members learn each other's models from the
  sum) and at most max_members; equal weights. Fewer eligible: no aggregate.
- `trimmed_mean` (its general form, for the benchmark): every proof whose model is not
  the parent resubmitted, whose k is
  within `spread` of the round's median k and at least `floor` above the parent's k
  minus `slack`, capped at `max_members` by rank; equal weights. A label-flipper's or
  a broken model's k falls far below the honest median, so it is left out; a
  resubmitted parent has the parent's commitment, so it is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.crypto import sha256

TIEBREAK_DOMAIN = b"zkpot/tiebreak/v1"


@dataclass(frozen=True)
class Candidate:
    """One valid proof of the round, as selection sees it."""

    participant: bytes
    k: int
    commitment: bytes


@dataclass(frozen=True)
class RoundFacts:
    """What every node knows about the round besides the proofs."""

    batch_hash: bytes
    batch_size: int
    parent_k: int  # the parent model's own k on the revealed batch
    parent_commitment: bytes  # the parent model's weight commitment


@dataclass(frozen=True)
class Contribution:
    participant: bytes
    weight: int  # integer: aggregation stays exact and deterministic


def tiebreak_key(batch_hash: bytes, participant: bytes) -> bytes:
    """Equal scores rank by this hash, ascending.

    Seeded by the round's batch hash: fixed at genesis (Merkle root), unknown to
    participants until the reveal, and out of reach of the previous proposer (a
    parent hash would let it grind ties of the next round).
    """
    return sha256(TIEBREAK_DOMAIN + batch_hash + participant)


def rank_key(batch_hash: bytes, k: int, participant: bytes) -> tuple[int, bytes]:
    """The one ranking order of a round's proofs: k descending, then `tiebreak_key`."""
    return -k, tiebreak_key(batch_hash, participant)


def ranked(candidates: Sequence[Candidate], batch_hash: bytes) -> list[Candidate]:
    return sorted(candidates, key=lambda c: rank_key(batch_hash, c.k, c.participant))


def median_k(candidates: Sequence[Candidate]) -> int:
    """The lower median of the proven k's (0 for none): an integer every node agrees on."""
    ks = sorted(c.k for c in candidates)
    return ks[(len(ks) - 1) // 2] if ks else 0


def select_winner(candidates: Sequence[Candidate], facts: RoundFacts) -> tuple[Contribution, ...]:
    best = ranked(candidates, facts.batch_hash)[:1]
    return tuple(Contribution(c.participant, 1) for c in best)


@dataclass(frozen=True)
class TrimmedMeanParams:
    spread: int  # keep k >= median - spread
    slack: int  # keep k >= parent_k - slack
    min_members: int  # fewer eligible: no aggregate this round (the parent stays)
    max_members: int  # at most this many, best-ranked first
    keep_percent: int = 100  # and at most max(min_members, ceil(keep_percent % of them))
    margin_weights: bool = False  # weight k - bar + 1 instead of 1


def select_trimmed_mean(
    candidates: Sequence[Candidate], facts: RoundFacts, params: TrimmedMeanParams
) -> tuple[Contribution, ...]:
    fresh = [c for c in candidates if c.commitment != facts.parent_commitment]
    if not fresh:
        return ()
    bar = max(median_k(fresh) - params.spread, facts.parent_k - params.slack)
    eligible = [c for c in ranked(fresh, facts.batch_hash) if c.k >= bar]
    # the best keep_percent of the proofs, but never fewer than a set needs to hide its members
    share = max(params.min_members, -(-len(fresh) * params.keep_percent // 100))
    cap = min(params.max_members, share)
    chosen = eligible[:cap]
    if len(chosen) < params.min_members:
        return ()
    return tuple(
        Contribution(c.participant, c.k - bar + 1 if params.margin_weights else 1) for c in chosen
    )


def select_best_share(
    candidates: Sequence[Candidate],
    facts: RoundFacts,
    keep_percent: int,
    min_members: int,
    max_members: int,
) -> tuple[Contribution, ...]:
    everyone = facts.batch_size  # no k is more than the batch size below any other
    params = TrimmedMeanParams(everyone, everyone, min_members, max_members, keep_percent)
    return select_trimmed_mean(candidates, facts, params)


def drop_parent_ties(
    chosen: Sequence[Contribution],
    candidates: Sequence[Candidate],
    facts: RoundFacts,
    min_members: int,
) -> tuple[Contribution, ...]:
    """The guarded free-rider filter: leave out chosen members whose k equals the parent's
    k on the batch (a resubmitted parent plus noise scores exactly that; an honest model
    rarely does), worst-ranked first, while at least `min_members` remain. The guard
    matters: dropping every tie would drop many honest members too and let a set of
    label flippers, whose k differs, take their place."""
    k_of = {c.participant: c.k for c in candidates}
    order = {c.participant: i for i, c in enumerate(ranked(candidates, facts.batch_hash))}
    kept = list(chosen)
    for c in sorted(chosen, key=lambda c: order[c.participant], reverse=True):
        if len(kept) <= min_members:
            break
        if k_of[c.participant] == facts.parent_k:
            kept.remove(c)
    return tuple(kept)
