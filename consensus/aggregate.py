"""The global model of an averaging round: the exact integer mean of the selected models.

With integer weights a_i and quantised models q_i, W = sum a_i * q_i, S = sum a_i; the
block carries M = floor(W / S) and R = W - S * M (0 <= R < S elementwise), so that
W = S * M + R exactly: that identity is what the commitment check verifies without
seeing any q_i (docs/protocol.md). Floor, not round-to-nearest, because it is the one
every language computes the same way on negative numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus import bn254
from consensus.errors import InvalidError


def weighted_sum(vectors: Sequence[Sequence[int]], weights: Sequence[int]) -> list[int]:
    if len(vectors) != len(weights) or not vectors:
        raise InvalidError("aggregate: need one weight per model and at least one model")
    size = len(vectors[0])
    if any(len(v) != size for v in vectors):
        raise InvalidError("aggregate: models of different sizes")
    if any(a < 1 for a in weights):
        raise InvalidError("aggregate: weights must be positive integers")
    total = [0] * size
    for v, a in zip(vectors, weights, strict=True):
        for j, x in enumerate(v):
            total[j] += a * x
    return total


def split_mean(total: Sequence[int], weight_sum: int) -> tuple[list[int], list[int]]:
    """(M, R) with total = weight_sum * M + R and 0 <= R < weight_sum, elementwise."""
    if weight_sum < 1:
        raise InvalidError("aggregate: the weights must sum to a positive integer")
    mean = [w // weight_sum for w in total]
    rest = [w - weight_sum * m for w, m in zip(total, mean, strict=True)]
    return mean, rest


def weighted_mean(
    vectors: Sequence[Sequence[int]], weights: Sequence[int]
) -> tuple[list[int], list[int]]:
    return split_mean(weighted_sum(vectors, weights), sum(weights))


def shifted(commitment: bn254.Point, k_point: bn254.Point) -> bn254.Point:
    """C - K: the linear part L(q) of a weight commitment."""
    return bn254.sub(commitment, k_point)


def check_sum(
    commitments: Sequence[bn254.Point],
    weights: Sequence[int],
    k_point: bn254.Point,
    total_commitment: bn254.Point,
) -> None:
    """Raise unless sum a_i*(C_i - K) == C(S*M + R) - K: `check_aggregate` with C(S*M + R)
    computed in one commitment (a node commits S*M + R directly: one MSM, not two)."""
    if len(commitments) != len(weights) or not commitments:
        raise InvalidError("aggregate: need one weight per commitment")
    left = bn254.msm([shifted(c, k_point) for c in commitments], list(weights))
    if left != shifted(total_commitment, k_point):
        raise InvalidError(
            "Block: the aggregate does not match the selected models' commitments "
            "(sum a_i*(C_i - K) != C(S*M + R) - K)"
        )


def check_aggregate(
    commitments: Sequence[bn254.Point],
    weights: Sequence[int],
    k_point: bn254.Point,
    mean_commitment: bn254.Point,
    rest_commitment: bn254.Point,
) -> None:
    """Raise unless sum a_i*(C_i - K) == S*(C(M) - K) + (C(R) - K), S = sum a_i.

    Because C(q) = L(q) + K with L linear, the left side is L(W) and the right side is
    L(S*M + R): equal exactly when W = S*M + R (L is binding), i.e. when M and R are the
    weighted mean and remainder of the committed models, none of which is seen here.
    """
    total = bn254.add(
        bn254.mul(shifted(mean_commitment, k_point), sum(weights)),
        shifted(rest_commitment, k_point),
        k_point,
    )
    check_sum(commitments, weights, k_point, total)
