"""Selection rules and the exact integer aggregate (consensus.selection, consensus.aggregate)."""

from __future__ import annotations

import random

import pytest

from consensus import bn254
from consensus.aggregate import check_aggregate, split_mean, weighted_mean, weighted_sum
from consensus.errors import InvalidError
from consensus.selection import (
    Candidate,
    Contribution,
    RoundFacts,
    TrimmedMeanParams,
    median_k,
    ranked,
    select_trimmed_mean,
    select_winner,
)

PARENT = b"P" * 32
FACTS = RoundFacts(batch_hash=b"h" * 32, batch_size=16, parent_k=10, parent_commitment=PARENT)
PARAMS = TrimmedMeanParams(spread=4, slack=16, min_members=3, max_members=64)


def cand(i: int, k: int, commitment: bytes | None = None) -> Candidate:
    return Candidate(bytes([i]) * 32, k, commitment or bytes([100 + i]) * 32)


def members(out: tuple[Contribution, ...]) -> list[int]:
    return sorted(c.participant[0] for c in out)


def test_winner_is_rank_one() -> None:
    cs = [cand(1, 9), cand(2, 14), cand(3, 11)]
    assert select_winner(cs, FACTS) == (Contribution(bytes([2]) * 32, 1),)
    assert select_winner([], FACTS) == ()


def test_ties_rank_by_the_batch_seeded_tiebreak() -> None:
    cs = [cand(i, 12) for i in range(6)]
    a = ranked(cs, b"a" * 32)
    b = ranked(cs, b"b" * 32)
    assert sorted(c.participant for c in a) == sorted(c.participant for c in b)
    assert [c.participant for c in a] != [c.participant for c in b]  # depends on the batch
    assert ranked(list(reversed(cs)), b"a" * 32) == a  # not on the input order


def test_median_is_the_lower_median() -> None:
    assert median_k([cand(i, k) for i, k in enumerate([5, 1, 9, 7])]) == 5
    assert median_k([cand(i, k) for i, k in enumerate([5, 1, 9])]) == 5
    assert median_k([]) == 0


def test_trimmed_mean_leaves_out_outliers_and_the_resubmitted_parent() -> None:
    honest = [cand(i, k) for i, k in enumerate([13, 12, 14, 11, 13], start=1)]
    flippers = [cand(6, 1), cand(7, 0)]
    free = cand(8, 15, PARENT)  # the parent resubmitted: its commitment is the parent's
    out = select_trimmed_mean([*honest, *flippers, free], FACTS, PARAMS)
    assert members(out) == [1, 2, 3, 4, 5]
    assert all(c.weight == 1 for c in out)


def test_trimmed_mean_parent_slack_and_caps() -> None:
    cs = [cand(i, k) for i, k in enumerate([12, 11, 10, 9, 8], start=1)]
    tight = TrimmedMeanParams(spread=16, slack=0, min_members=1, max_members=64)
    assert members(select_trimmed_mean(cs, FACTS, tight)) == [1, 2, 3]  # k >= parent_k
    capped = TrimmedMeanParams(spread=16, slack=16, min_members=1, max_members=2)
    assert members(select_trimmed_mean(cs, FACTS, capped)) == [1, 2]  # best-ranked first
    few = TrimmedMeanParams(spread=0, slack=16, min_members=3, max_members=64)
    assert members(select_trimmed_mean(cs, FACTS, few)) == [1, 2, 3]  # k >= median 10
    assert select_trimmed_mean(cs[:2], FACTS, few) == ()  # two: below min_members


def test_weighted_mean_is_exact() -> None:
    rng = random.Random(3)
    vectors = [[rng.randrange(-3000, 3000) for _ in range(50)] for _ in range(5)]
    weights = [rng.randrange(1, 7) for _ in vectors]
    mean, rest = weighted_mean(vectors, weights)
    total = weighted_sum(vectors, weights)
    s = sum(weights)
    assert all(t == s * m + r and 0 <= r < s for t, m, r in zip(total, mean, rest, strict=True))
    assert split_mean([-7, 7], 2) == ([-4, 3], [1, 1])  # floor on negatives


@pytest.mark.parametrize(
    "vectors, weights",
    [([], []), ([[1, 2]], [0]), ([[1, 2], [1]], [1, 1]), ([[1]], [1, 1])],
)
def test_weighted_mean_refuses_bad_input(vectors: list[list[int]], weights: list[int]) -> None:
    with pytest.raises(InvalidError):
        weighted_mean(vectors, weights)


def test_the_aggregate_check_on_an_affine_commitment() -> None:
    """C(q) = sum q_j*B_j + K (the shape ezkl's commitment has): the check accepts the
    exact mean and remainder and refuses either off by one in one weight."""
    rng = random.Random(5)
    basis = [bn254.mul(bn254.G, rng.randrange(1, bn254.R)) for _ in range(12)]
    k_point = bn254.mul(bn254.G, rng.randrange(1, bn254.R))

    def commit(q: list[int]) -> bn254.Point:
        return bn254.add(bn254.msm(basis, q), k_point)

    models = [[rng.randrange(-300, 300) for _ in basis] for _ in range(4)]
    weights = [1, 2, 1, 3]
    mean, rest = weighted_mean(models, weights)
    cs = [commit(q) for q in models]
    check_aggregate(cs, weights, k_point, commit(mean), commit(rest))
    off = list(mean)
    off[5] += 1
    with pytest.raises(InvalidError, match="aggregate does not match"):
        check_aggregate(cs, weights, k_point, commit(off), commit(rest))
    rest_off = list(rest)
    rest_off[0] += 1
    with pytest.raises(InvalidError, match="aggregate does not match"):
        check_aggregate(cs, weights, k_point, commit(mean), commit(rest_off))
    with pytest.raises(InvalidError, match="aggregate does not match"):
        check_aggregate(cs, [1, 2, 1, 2], k_point, commit(mean), commit(rest))
