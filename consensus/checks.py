"""The expensive checks a block or proof needs, as values: collect first, then check.

Cheap rules run in `consensus` and name the work they could not do themselves
(zk verification, the commitment of a model, its plain re-evaluation) as these
values; the shell answers them in its worker pool, and a pure `conclude` turns the
answers into a verdict. The same shape as Lighthouse's collect-then-verify
signature sets: no rule runs twice, none runs with a stub.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from consensus.errors import InvalidError
from consensus.types import EvalBatch


@dataclass(frozen=True)
class VerifyProof:
    """Answer: bool, whether the zk proof verifies for these public values."""

    proof: bytes
    batch: EvalBatch
    commitment: bytes
    k: int


@dataclass(frozen=True)
class CommitModel:
    """Answer: bytes, the weight commitment of the model blob with this hash."""

    model_hash: bytes


@dataclass(frozen=True)
class EvaluateModel:
    """Answer: int, how many of the batch's examples that model classifies correctly."""

    model_hash: bytes
    batch: EvalBatch


@dataclass(frozen=True)
class CommitAggregate:
    """Answer: bytes, the compressed C(S*M + R) = L(S*M + R) + K of the block's model M
    (integers at the parameter scale) with weight sum S and remainder R (consensus.aggregate)."""

    model_hash: bytes
    remainder: bytes
    weight_sum: int


@dataclass(frozen=True)
class UpdateHolds:
    """Answer: bool, whether a member's masked vector is the model it committed plus the
    masks it committed (L(y) = a(C - K) + sum s L(u) + L(p)): evidence of a wrong update."""

    commitment: bytes  # the member's weight commitment C
    weight: int
    update: bytes  # the encoded MaskedUpdate
    signs: tuple[int, ...]  # its pairwise masks' signs, in its update's order
    parts: tuple[bytes, ...] = ()  # v7: the data of its later vector parts, checked against it


@dataclass(frozen=True)
class MaskOf:
    """Answer: bytes, L(expand(seed)) compressed: the commitment a mask from this seed has
    (a member's self seed, or a pair's true seed from a PairReveal)."""

    seed: bytes


@dataclass(frozen=True)
class ServerStep:
    """Answer: bool, whether the model and velocity blobs are exactly the server
    optimizer's step (consensus.optimizer) from the parent's model and velocity (empty:
    zero) with the aggregate: G' as integers at the parameter scale, V' byte for byte."""

    parent_model: bytes
    parent_velocity: bytes
    aggregate: bytes
    model: bytes
    velocity: bytes
    beta_num: int
    beta_den: int
    scale: int

    def blobs(self) -> tuple[bytes, ...]:
        """The blob hashes it reads."""
        named = (self.parent_model, self.parent_velocity, self.aggregate, self.model, self.velocity)
        return tuple(h for h in named if h)


ModelCheck = CommitModel | EvaluateModel | CommitAggregate
Check = VerifyProof | ModelCheck | UpdateHolds | MaskOf | ServerStep
Answer = bool | bytes | int
Answers = Mapping[Check, Answer]


def verified(answers: Answers, check: VerifyProof) -> bool:
    got = answers.get(check)
    if not isinstance(got, bool):
        raise InvalidError("a zk verification was not answered")
    return got


def stepped(answers: Answers, check: ServerStep) -> bool:
    got = answers.get(check)
    if not isinstance(got, bool):
        raise InvalidError("the server step was not answered")
    return got


def commitment(answers: Answers, check: CommitModel | CommitAggregate) -> bytes:
    got = answers.get(check)
    if not isinstance(got, bytes):
        raise InvalidError("a model's commitment was not answered")
    return got


def evaluation(answers: Answers, check: EvaluateModel) -> int:
    got = answers.get(check)
    if not isinstance(got, int) or isinstance(got, bool):
        raise InvalidError("a model's re-evaluation was not answered")
    return got
