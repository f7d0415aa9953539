"""Block validity in one entry point: `on_block` runs every cheap rule, `conclude` the rest.

`on_block` checks everything that needs only values (header, signatures, the
reveal, commits, proofs' cheap rules, ranking) and returns the expensive checks
still to do (consensus.checks). The shell answers them in its worker pool and
hands the answers to `conclude`, which gives the block's score or raises
InvalidError. Nothing runs twice and nothing runs with a stub; what a block's
model must be is the chain's rule's business (consensus.strategy).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from consensus import evidence, membership
from consensus.checks import (
    Answers,
    Check,
    VerifyProof,
    verified,
)
from consensus.errors import InvalidError
from consensus.membership import Roster, genesis_roster
from consensus.rules import (
    PROOF_FAILS,
    check_commit,
    check_reveal,
    check_signature,
    is_sealed,
    proof_check,
    rank_proofs,
)
from consensus.strategy import Rule, proposer_proof, rule_for
from consensus.types import Block, Genesis


@dataclass(frozen=True)
class ParentInfo:
    """What block validation needs to know of the parent (genesis: round -1, height 0)."""

    hash: bytes
    round: int
    height: int
    model_hash: bytes = b""  # its global model's blob hash (the v2 rules need it)
    roster: Roster | None = None  # the participant set after it (None: the genesis's)
    velocity_hash: bytes = b""  # its server optimizer's velocity blob (v6; empty: zero)


@dataclass(frozen=True)
class PendingBlock:
    """A block that passed every cheap rule, with the expensive checks still to answer."""

    block: Block
    rule: Rule
    parent_model: bytes  # the parent's model blob hash
    checks: tuple[Check, ...]
    roster: Roster  # the participant set after this block (consensus.membership)
    excluded: frozenset[bytes] = frozenset()  # whom its selection may not include (v5)
    offences: tuple[evidence.Offence, ...] = ()  # what its evidence proves, up to its checks
    parent_velocity: bytes = b""  # the parent's velocity blob hash (v6)


def block_blobs(block: Block) -> tuple[bytes, ...]:
    """The hashes of the blobs a block names (its model, v6's aggregate and velocity):
    a node fetches and stores them with the block."""
    named = (block.model_hash, block.aggregate_hash, block.velocity_hash)
    return tuple(dict.fromkeys(h for h in named if h))


def parent_roster(genesis: Genesis, parent: ParentInfo) -> Roster:
    return parent.roster if parent.roster is not None else genesis_roster(genesis)


def check_block_header(genesis: Genesis, chain_id: bytes, parent: ParentInfo, block: Block) -> None:
    """Cheapest first: a peer's garbage is dropped before anything is fetched or verified."""
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
    if block.proposer not in parent_roster(genesis, parent).at(block.round):
        raise InvalidError(f"Block: the proposer is not a participant of round {block.round}")
    if block.rank > genesis.timing.max_rank:
        raise InvalidError(f"Block: rank {block.rank} exceeds max_rank {genesis.timing.max_rank}")
    check_signature(block, block.proposer, chain_id)


def on_block(genesis: Genesis, chain_id: bytes, parent: ParentInfo, block: Block) -> PendingBlock:
    """Every rule that needs no prover; raises InvalidError at the first broken one."""
    check_block_header(genesis, chain_id, parent, block)
    roster = parent_roster(genesis, parent)
    participants = roster.at(block.round)
    check_reveal(genesis, chain_id, block.reveal)
    commit_ids = [c.hash() for c in block.commits]
    if any(a >= b for a, b in itertools.pairwise(commit_ids)):
        raise InvalidError("Block: commits must be sorted by commit id, without duplicates")
    commits = dict(zip(commit_ids, block.commits, strict=True))
    if len({c.participant for c in block.commits}) != len(block.commits):
        raise InvalidError("Block: two commits by the same participant")
    for commit_id, c in commits.items():
        if c.parent != block.parent or c.round != block.round:
            raise InvalidError("Block: a commit is for another parent or round")
        if not is_sealed(block.reveal, commit_id):
            raise InvalidError("Block: a commit is not in the reveal's sealed set")
        check_commit(genesis, chain_id, c, participants)
    proof_ids = [p.commit_id for p in block.proofs]
    if any(a >= b for a, b in itertools.pairwise(proof_ids)):
        raise InvalidError("Block: proofs must be sorted by commit id, one per commit")
    for p in block.proofs:
        if p.commit_id not in commits:
            raise InvalidError("Block: a proof's commit is not in the block")
    rule = rule_for(genesis)
    proposer_proof(block)
    rule.check_shape(block)
    ranking = rank_proofs(block.reveal.batch, block.proofs)
    mine = next(r for r in ranking if r.participant == block.proposer)
    if mine.rank != block.rank:
        raise InvalidError(
            f"Block: proposer ranks {mine.rank} among the block's proofs, claims {block.rank}"
        )
    verifications = tuple(
        proof_check(genesis, chain_id, block.reveal, commits[p.commit_id], p) for p in block.proofs
    )
    model_checks = rule.model_checks(block, parent.model_hash, parent.velocity_hash)
    after = roster_after(genesis, chain_id, roster, block)
    offences = tuple(evidence.offence(genesis, chain_id, ev) for ev in block.evidence)
    evidence_checks = tuple(o.check for o in offences if o.check is not None)
    return PendingBlock(
        block,
        rule,
        parent.model_hash,
        (*verifications, *model_checks, *evidence_checks),
        after,
        roster.excluded_at(block.round),
        offences,
        parent.velocity_hash,
    )


def roster_after(genesis: Genesis, chain_id: bytes, roster: Roster, block: Block) -> Roster:
    """The chain state a block leaves: its membership changes, then its evidence."""
    after = membership.apply(genesis, chain_id, roster, block.round, block.membership)
    return evidence.apply(genesis, chain_id, after, block.round, block.evidence)


def proof_verifications(block: Block) -> tuple[VerifyProof, ...]:
    """The zk verifications a block will need, before any rule is checked: the same
    values `proof_check` asks for, so a node may run them ahead (sync does)."""
    return tuple(VerifyProof(p.proof, block.reveal.batch, p.commitment, p.k) for p in block.proofs)


def conclude(pending: PendingBlock, answers: Answers) -> int:
    """The verdict once the expensive checks are answered: the block's score, or InvalidError."""
    for check in pending.checks:
        if isinstance(check, VerifyProof) and not verified(answers, check):
            raise InvalidError(PROOF_FAILS)
    for off in pending.offences:
        evidence.confirm(off, answers)
    return pending.rule.conclude(
        pending.block, answers, pending.parent_model, pending.excluded, pending.parent_velocity
    )
