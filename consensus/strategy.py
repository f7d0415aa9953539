"""The selection/aggregation rule: one object decides whose models make the next global model.

Like Flower's `Strategy`, a rule is one plug-in class: from a round's valid proofs
it says who contributes to the next global model with which integer weights
(`select`), which shape a block of the rule has (`check_shape`, cheap), which
expensive checks tie the block's model to the contributors' proofs (`model_checks`,
answered by the shell) and how to read the answers into the block's score
(`conclude`). The score is the new global model's own k on the round's batch for
every rule, so fork choice compares blocks of any rule the same way. Adding a rule
is adding one class with a `name` under `@register`; the genesis names the rule.
(Over 300 lines: both rules, each stated whole, side by side.)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import ClassVar

from consensus import aggregate, bn254, optimizer
from consensus.checks import (
    Answers,
    Check,
    CommitAggregate,
    CommitModel,
    EvaluateModel,
    ServerStep,
    commitment,
    evaluation,
    stepped,
)
from consensus.errors import InvalidError
from consensus.selection import (
    Candidate,
    Contribution,
    RoundFacts,
    drop_parent_ties,
    select_best_share,
    select_winner,
)
from consensus.types import Block, EvalBatch, Genesis, ProofTx, RuleSpec


class Rule(ABC):
    name: ClassVar[str]
    aggregates: ClassVar[bool]  # the global model is an average the members build together

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.spec: RuleSpec = genesis.rule

    @abstractmethod
    def select(
        self,
        batch: EvalBatch,
        proofs: Sequence[ProofTx],
        parent_commitment: bytes,
        excluded: Collection[bytes] = frozenset(),
        parent_k: int = 0,
    ) -> tuple[Contribution, ...]:
        """Who may contribute to the global model of a block with these proofs, never one
        of `excluded` (v5: participants the chain's evidence leaves out this round);
        `parent_k`: the parent model's k on the batch (v6, when `needs_parent_k`)."""

    def needs_parent_k(self) -> bool:
        """Whether `select` reads the parent's k (a node then evaluates the parent)."""
        return False

    @abstractmethod
    def check_shape(self, block: Block) -> None:
        """The rule's cheap rules on a block (InvalidError)."""

    @abstractmethod
    def model_checks(
        self, block: Block, parent_model: bytes, parent_velocity: bytes = b""
    ) -> tuple[Check, ...]:
        """The expensive checks that tie the block's model to its contributors' proofs."""

    @abstractmethod
    def conclude(
        self,
        block: Block,
        answers: Answers,
        parent_model: bytes,
        excluded: Collection[bytes] = frozenset(),
        parent_velocity: bytes = b"",
    ) -> int:
        """The block's score once the checks are answered, or InvalidError."""


RULES: dict[str, type[Rule]] = {}

# Under an aggregating rule (v4) a block that keeps the parent's model weighs 1 and an
# aggregate at least 2, so fork choice always prefers the aggregate of a round to a
# keep-parent sibling, whatever the models score.
KEEP_PARENT_SCORE = 1
AGGREGATE_LEAST_SCORE = 2


def rests_on_enough(proofs: int, sealed: int) -> bool:
    """An aggregate rests on the proofs of at least half the round's sealed commits (v4),
    so its proposer cannot pick the subset the rule selects from."""
    return 2 * proofs >= sealed


def register(cls: type[Rule]) -> type[Rule]:
    if cls.name in RULES:
        raise ValueError(f"two rules named {cls.name!r}")
    RULES[cls.name] = cls
    return cls


def proposer_proof(block: Block) -> ProofTx:
    for p in block.proofs:
        if p.participant == block.proposer:
            return p
    raise InvalidError("Block: the proposer has no proof in the block")


def _candidates(proofs: Sequence[ProofTx], excluded: Collection[bytes]) -> list[Candidate]:
    return [
        Candidate(p.participant, p.k, p.commitment) for p in proofs if p.participant not in excluded
    ]


def _facts(genesis: Genesis, batch: EvalBatch, parent_commitment: bytes) -> RoundFacts:
    # parent_k 0: best-share's bar does not depend on it (its spread and slack are the
    # batch size); only the guard (v6) reads the parent's k
    return RoundFacts(batch.hash(), genesis.eval_plan.batch_size, 0, parent_commitment)


def _score(block: Block, answers: Answers, model_hash: bytes) -> int:
    k = evaluation(answers, EvaluateModel(model_hash, block.reveal.batch))
    if k < 1:
        raise InvalidError("Block: the new global model must classify at least one example")
    return k


@register
class Winner(Rule):
    """Protocol v1: the proposer's own model becomes the global model.

    The proposer is the best-ranked participant still proposing (fallback ranks),
    and its model must open its commitment and score its proven k in the clear.
    """

    name = "winner"
    aggregates = False

    def select(
        self,
        batch: EvalBatch,
        proofs: Sequence[ProofTx],
        parent_commitment: bytes,
        excluded: Collection[bytes] = frozenset(),
        parent_k: int = 0,
    ) -> tuple[Contribution, ...]:
        return select_winner(
            _candidates(proofs, excluded), _facts(self.genesis, batch, parent_commitment)
        )

    def check_shape(self, block: Block) -> None:
        if block.members or block.remainder or block.aggregate_hash or block.velocity_hash:
            raise InvalidError(
                "Block: the winner rule's blocks carry no members, remainder, M or V"
            )
        if proposer_proof(block).k < 1:
            raise InvalidError("Block: the proposer's proven k must be at least 1")

    def score(self, block: Block) -> int:
        """Cheap: the proposer's proven k, which `conclude` confirms in the clear."""
        return proposer_proof(block).k

    def model_checks(
        self, block: Block, parent_model: bytes, parent_velocity: bytes = b""
    ) -> tuple[Check, ...]:
        return (CommitModel(block.model_hash), EvaluateModel(block.model_hash, block.reveal.batch))

    def conclude(
        self,
        block: Block,
        answers: Answers,
        parent_model: bytes,
        excluded: Collection[bytes] = frozenset(),
        parent_velocity: bytes = b"",
    ) -> int:
        mine = proposer_proof(block)
        if commitment(answers, CommitModel(block.model_hash)) != mine.commitment:
            raise InvalidError("Block: the revealed model does not match the proposer's commitment")
        recomputed = _score(block, answers, block.model_hash)
        if recomputed != mine.k:
            raise InvalidError(
                f"Block: the revealed model scores {recomputed} in the clear, the proof claims {mine.k}"
            )
        return recomputed


@register
class BestShare(Rule):
    """Protocol v2: the exact integer mean of the best-ranked share of the fresh models.

    `select` is consensus.selection.select_best_share over the block's proofs, with
    the parent's commitment (a resubmitted parent is never selected), then (v6, when the
    genesis sets `guard_members`) the guarded free-rider filter with the parent's k. A
    block names its `members` (the selected participants whose masked vectors the
    aggregation completed with; dropouts leave some out, never fewer than min_members),
    carries the mean M and the remainder R inline, and is valid only if
    sum a_i*(C_i - K) = S*(C(M) - K) + (C(R) - K), and its proofs are at least half of
    the round's sealed commits. M is the block's model, or (v6, a server optimizer) its
    `aggregate_hash`, and the model is the optimizer's step from the parent's model and
    velocity with M (consensus.optimizer). No members: no aggregate this round, the
    block keeps the parent's model (and velocity) and scores KEEP_PARENT_SCORE. An
    aggregate scores its model's k on the batch, at least AGGREGATE_LEAST_SCORE.
    """

    name = "best-share"
    aggregates = True

    def __init__(self, genesis: Genesis) -> None:
        super().__init__(genesis)
        self.server = optimizer.server_of(genesis.rule)

    def select(
        self,
        batch: EvalBatch,
        proofs: Sequence[ProofTx],
        parent_commitment: bytes,
        excluded: Collection[bytes] = frozenset(),
        parent_k: int = 0,
    ) -> tuple[Contribution, ...]:
        s = self.spec
        candidates = _candidates(proofs, excluded)
        facts = _facts(self.genesis, batch, parent_commitment)  # its bar never binds
        chosen = select_best_share(candidates, facts, s.keep_percent, s.min_members, s.max_members)
        if s.guard_members:
            with_k = dataclasses.replace(facts, parent_k=parent_k)
            chosen = drop_parent_ties(chosen, candidates, with_k, s.guard_members)
        return chosen

    def needs_parent_k(self) -> bool:
        return self.spec.guard_members > 0

    def aggregate_of(self, block: Block) -> bytes:
        """The hash of the blob holding the block's aggregate M."""
        return block.model_hash if self.server is None else block.aggregate_hash

    def check_shape(self, block: Block) -> None:
        if self.server is None and (block.aggregate_hash or block.velocity_hash):
            raise InvalidError("Block: without a server optimizer a block names no M or V blob")
        if not block.members:
            if block.remainder or block.aggregate_hash:
                raise InvalidError("Block: a block without members carries no aggregate")
            return
        if self.server is not None and not (block.aggregate_hash and block.velocity_hash):
            raise InvalidError(
                "Block: an aggregate under a server optimizer names M's and V's blobs"
            )
        if len(block.members) < self.spec.min_members:
            raise InvalidError(
                f"Block: {len(block.members)} members, the rule needs at least "
                f"{self.spec.min_members} (fewer would let members learn each other's models)"
            )
        if not rests_on_enough(len(block.proofs), len(block.reveal.sealed)):
            raise InvalidError(
                f"Block: an aggregate rests on {len(block.proofs)} proofs, fewer than half of "
                f"the round's {len(block.reveal.sealed)} sealed commits"
            )
        proven = {p.participant for p in block.proofs}
        if any(m not in proven for m in block.members):
            raise InvalidError("Block: a member has no proof in the block")
        if len(block.remainder) != self.genesis.aggregation.parameters:
            raise InvalidError(
                f"Block: the remainder has {len(block.remainder)} values, the model "
                f"{self.genesis.aggregation.parameters} parameters"
            )
        s = len(block.members)  # equal weights: the weight sum is the member count
        if max(block.remainder) >= s:
            raise InvalidError(f"Block: a remainder value is not below the weight sum {s}")

    def _step(self, block: Block, parent_model: bytes, parent_velocity: bytes) -> ServerStep:
        m = self.server
        assert m is not None
        return ServerStep(
            parent_model,
            parent_velocity,
            block.aggregate_hash,
            block.model_hash,
            block.velocity_hash,
            m.beta_num,
            m.beta_den,
            m.scale,
        )

    def model_checks(
        self, block: Block, parent_model: bytes, parent_velocity: bytes = b""
    ) -> tuple[Check, ...]:
        batch = block.reveal.batch
        if not block.members:
            return ()  # its weight is KEEP_PARENT_SCORE whatever the parent model scores
        parent_k = (EvaluateModel(parent_model, batch),) if self.needs_parent_k() else ()
        step = () if self.server is None else (self._step(block, parent_model, parent_velocity),)
        return (
            CommitModel(parent_model),
            *parent_k,
            CommitAggregate(self.aggregate_of(block), block.remainder, len(block.members)),
            *step,
            EvaluateModel(block.model_hash, batch),
        )

    def conclude(
        self,
        block: Block,
        answers: Answers,
        parent_model: bytes,
        excluded: Collection[bytes] = frozenset(),
        parent_velocity: bytes = b"",
    ) -> int:
        if not block.members:
            if block.model_hash != parent_model:
                raise InvalidError("Block: a block without an aggregate keeps the parent's model")
            if block.velocity_hash != parent_velocity:
                raise InvalidError(
                    "Block: a block without an aggregate keeps the parent's velocity"
                )
            # it keeps the chain live (and final) through rounds no aggregate could
            # finish, and never beats an aggregate of its round (v4: one cheap block must
            # not pre-empt the members' work)
            return KEEP_PARENT_SCORE
        batch = block.reveal.batch
        parent_c = commitment(answers, CommitModel(parent_model))
        parent_k = (
            evaluation(answers, EvaluateModel(parent_model, batch)) if self.needs_parent_k() else 0
        )
        chosen = self.select(batch, block.proofs, parent_c, excluded, parent_k)
        weights = {c.participant: c.weight for c in chosen}
        if any(m not in weights for m in block.members):
            raise InvalidError(
                "Block: a member is not one the rule selects from the block's proofs"
            )
        if any(weights[m] != 1 for m in block.members):
            raise InvalidError("Block: best-share weighs every member 1")
        by_key = {p.participant: p for p in block.proofs}
        k_point = bn254.decompress(self.genesis.aggregation.constant)
        agg = CommitAggregate(self.aggregate_of(block), block.remainder, len(block.members))
        claimed = bn254.decompress(commitment(answers, agg))
        aggregate.check_sum(
            [bn254.decompress(by_key[m].commitment) for m in block.members],
            [weights[m] for m in block.members],
            k_point,
            claimed,
        )
        if self.server is not None and not stepped(
            answers, self._step(block, parent_model, parent_velocity)
        ):
            raise InvalidError(
                "Block: the model and velocity are not the server optimizer's step from the "
                "parent's with the aggregate"
            )
        return max(AGGREGATE_LEAST_SCORE, _score(block, answers, block.model_hash))


def rule_for(genesis: Genesis) -> Rule:
    """The rule the genesis names (a version-1 genesis has no rule field: `winner`);
    check_genesis has refused any other name."""
    return RULES[genesis.rule.name](genesis)
