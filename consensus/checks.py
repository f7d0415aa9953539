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


Check = VerifyProof | CommitModel | EvaluateModel
Answer = bool | bytes | int
Answers = Mapping[Check, Answer]


def verified(answers: Answers, check: VerifyProof) -> bool:
    got = answers.get(check)
    if not isinstance(got, bool):
        raise InvalidError("a zk verification was not answered")
    return got


def commitment(answers: Answers, check: CommitModel) -> bytes:
    got = answers.get(check)
    if not isinstance(got, bytes):
        raise InvalidError("the commitment of the block's model was not answered")
    return got


def evaluation(answers: Answers, check: EvaluateModel) -> int:
    got = answers.get(check)
    if not isinstance(got, int) or isinstance(got, bool):
        raise InvalidError("the re-evaluation of the block's model was not answered")
    return got
