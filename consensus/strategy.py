"""The selection/aggregation rule: one object decides whose models make the next global model.

Like Flower's `Strategy`, a rule is one plug-in class: from a block's valid proofs
it says who contributes to the next global model with which integer weights, what
the block adds to fork choice, and which expensive checks prove that the block's
claimed model is that combination (`model_checks`, answered by the shell) and how
to read the answers (`check_model`). Adding a rule is adding one class with a
`name` under `@register`; the genesis names the rule (`rule_for`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from consensus.checks import Answers, Check, CommitModel, EvaluateModel, commitment, evaluation
from consensus.errors import InvalidError
from consensus.selection import Contribution
from consensus.types import Block, Genesis, ProofTx


class Rule(ABC):
    name: ClassVar[str]

    @abstractmethod
    def contributions(self, proofs: Sequence[ProofTx], proposer: bytes) -> tuple[Contribution, ...]:
        """Who contributes to the global model of a block with these proofs, by `proposer`."""

    @abstractmethod
    def score(self, block: Block) -> int:
        """What the block adds to its chain's cumulative score (fork choice)."""

    @abstractmethod
    def model_checks(self, block: Block) -> tuple[Check, ...]:
        """The expensive checks that tie the block's model to the contributors' proofs."""

    @abstractmethod
    def check_model(self, block: Block, answers: Answers) -> None:
        """Raise InvalidError unless the answers show the block's model is the rule's."""


RULES: dict[str, type[Rule]] = {}


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


@register
class Winner(Rule):
    """Protocol v1: the proposer's own model becomes the global model.

    The proposer is the best-ranked participant still proposing (fallback ranks),
    its block scores its own proven k, and its model must open its commitment and
    score that k in the clear.
    """

    name = "winner"

    def contributions(self, proofs: Sequence[ProofTx], proposer: bytes) -> tuple[Contribution, ...]:
        if not any(p.participant == proposer for p in proofs):
            raise InvalidError("Block: the proposer has no proof in the block")
        return (Contribution(proposer, 1),)

    def score(self, block: Block) -> int:
        return proposer_proof(block).k

    def model_checks(self, block: Block) -> tuple[Check, ...]:
        return (CommitModel(block.model_hash), EvaluateModel(block.model_hash, block.reveal.batch))

    def check_model(self, block: Block, answers: Answers) -> None:
        commit_check, eval_check = self.model_checks(block)
        assert isinstance(commit_check, CommitModel) and isinstance(eval_check, EvaluateModel)
        mine = proposer_proof(block)
        if commitment(answers, commit_check) != mine.commitment:
            raise InvalidError("Block: the revealed model does not match the proposer's commitment")
        recomputed = evaluation(answers, eval_check)
        if recomputed != mine.k:
            raise InvalidError(
                f"Block: the revealed model scores {recomputed} in the clear, the proof claims {mine.k}"
            )


def rule_for(genesis: Genesis) -> Rule:
    """The rule the genesis names (a version-1 genesis has no rule field: `winner`);
    check_genesis has refused any other name."""
    return RULES[genesis.rule.name]()
