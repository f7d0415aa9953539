"""The selection/aggregation rule: one object decides whose models make the next global model.

Like Flower's `Strategy`, a rule is one plug-in class: from a round's valid proofs
it says who contributes to the next global model with which integer weights
(`select`), which shape a block of the rule has (`check_shape`, cheap), which
expensive checks tie the block's model to the contributors' proofs (`model_checks`,
answered by the shell) and how to read the answers into the block's score
(`conclude`). The score is the new global model's own k on the round's batch for
every rule, so fork choice compares blocks of any rule the same way. Adding a rule
is adding one class with a `name` under `@register`; the genesis names the rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import ClassVar

from consensus import aggregate, bn254
from consensus.checks import (
    Answers,
    Check,
    CommitAggregate,
    CommitModel,
    EvaluateModel,
    commitment,
    evaluation,
)
from consensus.errors import InvalidError
from consensus.selection import (
    Candidate,
    Contribution,
    RoundFacts,
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
    ) -> tuple[Contribution, ...]:
        """Who may contribute to the global model of a block with these proofs, never one
        of `excluded` (v5: participants the chain's evidence leaves out this round)."""

    @abstractmethod
    def check_shape(self, block: Block) -> None:
        """The rule's cheap rules on a block (InvalidError)."""

    @abstractmethod
    def model_checks(self, block: Block, parent_model: bytes) -> tuple[Check, ...]:
        """The expensive checks that tie the block's model to its contributors' proofs."""

    @abstractmethod
    def conclude(
        self,
        block: Block,
        answers: Answers,
        parent_model: bytes,
        excluded: Collection[bytes] = frozenset(),
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
    # parent_k 0: no registered rule's bar depends on it (best-share's spread and slack
    # are the batch size, so its bar never binds)
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
    ) -> tuple[Contribution, ...]:
        return select_winner(
            _candidates(proofs, excluded), _facts(self.genesis, batch, parent_commitment)
        )

    def check_shape(self, block: Block) -> None:
        if block.members or block.remainder:
            raise InvalidError("Block: the winner rule's blocks carry no members or remainder")
        if proposer_proof(block).k < 1:
            raise InvalidError("Block: the proposer's proven k must be at least 1")

    def score(self, block: Block) -> int:
        """Cheap: the proposer's proven k, which `conclude` confirms in the clear."""
        return proposer_proof(block).k

    def model_checks(self, block: Block, parent_model: bytes) -> tuple[Check, ...]:
        return (CommitModel(block.model_hash), EvaluateModel(block.model_hash, block.reveal.batch))

    def conclude(
        self,
        block: Block,
        answers: Answers,
        parent_model: bytes,
        excluded: Collection[bytes] = frozenset(),
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
    the parent's commitment (a resubmitted parent is never selected). A block names
    its `members` (the selected participants whose masked vectors the aggregation
    completed with; dropouts leave some out, never fewer than min_members), carries
    the mean M as its model and the remainder R inline, and is valid only if
    sum a_i*(C_i - K) = S*(C(M) - K) + (C(R) - K), and its proofs are at least half
    of the round's sealed commits. No members: no aggregate this round, the block keeps
    the parent's model and scores KEEP_PARENT_SCORE. An aggregate scores its model's k
    on the batch, at least AGGREGATE_LEAST_SCORE.
    """

    name = "best-share"
    aggregates = True

    def select(
        self,
        batch: EvalBatch,
        proofs: Sequence[ProofTx],
        parent_commitment: bytes,
        excluded: Collection[bytes] = frozenset(),
    ) -> tuple[Contribution, ...]:
        s = self.spec
        facts = _facts(self.genesis, batch, parent_commitment)
        return select_best_share(
            _candidates(proofs, excluded), facts, s.keep_percent, s.min_members, s.max_members
        )

    def check_shape(self, block: Block) -> None:
        if not block.members:
            if block.remainder:
                raise InvalidError("Block: a block without members carries no remainder")
            return
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

    def model_checks(self, block: Block, parent_model: bytes) -> tuple[Check, ...]:
        batch = block.reveal.batch
        if not block.members:
            return ()  # its weight is KEEP_PARENT_SCORE whatever the parent model scores
        return (
            CommitModel(parent_model),
            CommitAggregate(block.model_hash, block.remainder, len(block.members)),
            EvaluateModel(block.model_hash, batch),
        )

    def conclude(
        self,
        block: Block,
        answers: Answers,
        parent_model: bytes,
        excluded: Collection[bytes] = frozenset(),
    ) -> int:
        if not block.members:
            if block.model_hash != parent_model:
                raise InvalidError("Block: a block without an aggregate keeps the parent's model")
            # it keeps the chain live (and final) through rounds no aggregate could
            # finish, and never beats an aggregate of its round (v4: one cheap block must
            # not pre-empt the members' work)
            return KEEP_PARENT_SCORE
        parent_c = commitment(answers, CommitModel(parent_model))
        chosen = self.select(block.reveal.batch, block.proofs, parent_c, excluded)
        weights = {c.participant: c.weight for c in chosen}
        if any(m not in weights for m in block.members):
            raise InvalidError(
                "Block: a member is not one the rule selects from the block's proofs"
            )
        if any(weights[m] != 1 for m in block.members):
            raise InvalidError("Block: best-share weighs every member 1")
        by_key = {p.participant: p for p in block.proofs}
        k_point = bn254.decompress(self.genesis.aggregation.constant)
        claimed = bn254.decompress(
            commitment(
                answers, CommitAggregate(block.model_hash, block.remainder, len(block.members))
            )
        )
        aggregate.check_sum(
            [bn254.decompress(by_key[m].commitment) for m in block.members],
            [weights[m] for m in block.members],
            k_point,
            claimed,
        )
        return max(AGGREGATE_LEAST_SCORE, _score(block, answers, block.model_hash))


def rule_for(genesis: Genesis) -> Rule:
    """The rule the genesis names (a version-1 genesis has no rule field: `winner`);
    check_genesis has refused any other name."""
    return RULES[genesis.rule.name](genesis)
