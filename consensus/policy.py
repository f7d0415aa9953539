"""The honest node's policy: what a publisher seals, which commits count, when to propose.

Validity (rules, blocks) says what every node must accept; this module says what
an honest node does, as pure functions over what it has seen (the way the
Ethereum specs keep validator behaviour apart from the state transition). The
shell feeds them its observations and acts on the answers; tests replay them from
data-driven vectors (tests/vectors/policy.json).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consensus.blocks import ParentInfo
from consensus.forkchoice import ChainNode, is_better
from consensus.rules import Ranked, rank_proofs
from consensus.strategy import KEEP_PARENT_SCORE
from consensus.types import Block, CommitTx, ProofTx, Reveal


@dataclass(frozen=True)
class Arrival:
    """A commit as the publisher saw it arrive."""

    commit_id: bytes
    participant: bytes
    received_ms: int


def seal(arrivals: Iterable[Arrival], deadline_ms: int) -> tuple[bytes, ...]:
    """The commits a reveal seals: each participant's first commit received by the deadline.

    Arrival time decides; equal times go to the lower commit id, so the answer
    does not depend on the order the shell kept them in. Sorted, as the wire wants.
    """
    first: dict[bytes, bytes] = {}
    for a in sorted(arrivals, key=lambda a: (a.received_ms, a.commit_id)):
        if a.received_ms <= deadline_ms and a.participant not in first:
            first[a.participant] = a.commit_id
    return tuple(sorted(first.values()))


def commits_complete(participants: Iterable[bytes], arrivals: Iterable[Arrival]) -> bool:
    """Every participant's commit is in: the publisher need not wait for the deadline."""
    return set(participants) <= {a.participant for a in arrivals}


def proofs_complete(reveal: Reveal, proofs: Mapping[bytes, ProofTx]) -> bool:
    """Every sealed commit has a verified proof: the rank-1 proposer need not wait longer."""
    return all(commit_id in proofs for commit_id in reveal.sealed)


def admits_commit(held: Iterable[CommitTx], commit: CommitTx) -> bool:
    """One commit per (participant, round, parent): the first one seen stays, repeats are no-ops.

    A second, different commit would let a participant pick after the reveal
    which of its models to prove.
    """
    h = commit.hash()
    return not any(
        c.participant == commit.participant
        and c.round == commit.round
        and c.parent == commit.parent
        and c.hash() != h
        for c in held
    )


def ranking_for(
    reveal: Reveal,
    commits: Mapping[bytes, CommitTx],
    proofs: Mapping[bytes, ProofTx],
    parent: bytes,
) -> list[Ranked]:
    """The rank order of the valid proofs whose commits trained from `parent`."""
    mine = [
        p
        for commit_id, p in proofs.items()
        if commit_id in commits and commits[commit_id].parent == parent
    ]
    return rank_proofs(reveal.batch, mine)


def build_block(
    parent: ParentInfo,
    proposer: bytes,
    reveal: Reveal,
    ranking: list[Ranked],
    commits: Mapping[bytes, CommitTx],
    proofs: Mapping[bytes, ProofTx],
    model_hash: bytes,
) -> Block:
    """The proposer's block, unsigned: every ranked proof with its commit, in commit-id order."""
    rank = next(r.rank for r in ranking if r.participant == proposer)
    ids = sorted(r.commit_id for r in ranking)
    return Block(
        reveal.round,
        parent.hash,
        parent.height + 1,
        proposer,
        rank,
        reveal,
        tuple(commits[i] for i in ids),
        tuple(proofs[i] for i in ids),
        model_hash,
    )


class Decision(enum.Enum):
    PROPOSE = "propose"
    WAIT = "wait"  # not our turn yet
    ABSTAIN = "abstain"  # for the rest of the round


def proposal_decision(
    me: bytes,
    ranking: list[Ranked],
    rank_due: int,
    max_rank: int,
    candidate: ChainNode | None,
    best_sibling: ChainNode | None,
    *,
    built_late: bool = False,
) -> Decision:
    """At the proposal time of `rank_due`: propose, wait for our rank, or abstain.

    An honest participant proposes from its own rank's time on unless a block that
    fork choice prefers to ours (`candidate`: the node our block would be) already
    exists for the same parent; with no valid proof of k >= 1 it never proposes. A
    participant whose proof was ready only after its rank's time (a slow machine)
    still proposes while the round lasts: a better late block wins by fork choice.
    Under an averaging rule the block is built only when proposing (`built_late`: the
    aggregation round), so its score is unknown here: any block for the parent already
    seen makes us abstain (the caller passes only a sibling that can block us,
    `blocking_sibling`: a keep-parent block cannot).
    """
    mine = next((r for r in ranking if r.participant == me), None)
    if mine is None or mine.k < 1 or mine.rank > max_rank:
        return Decision.ABSTAIN
    if best_sibling is not None and (
        built_late or (candidate is not None and not is_better(candidate, best_sibling))
    ):
        return Decision.ABSTAIN
    return Decision.PROPOSE if mine.rank <= rank_due else Decision.WAIT


def blocking_sibling(
    sibling: ChainNode | None, parent: ChainNode, aggregates: bool
) -> ChainNode | None:
    """The sibling block that makes a proposer abstain, if any. Under an aggregating rule
    a block that keeps the parent's model (weight KEEP_PARENT_SCORE) never does: fork
    choice prefers any aggregate of the round to it, so a cheap keep-parent block
    cannot make the in-turn aggregator give up its members' work."""
    if sibling is None or not aggregates:
        return sibling
    return None if sibling.score - parent.score <= KEEP_PARENT_SCORE else sibling


def best_of(a: ChainNode | None, b: ChainNode) -> ChainNode:
    """The node fork choice prefers (siblings compare by score, then hash)."""
    return b if a is None or is_better(b, a) else a
