"""The server optimizer (consensus.optimizer) and the guarded free-rider filter
(consensus.selection.drop_parent_ties): integers, deterministic, as specified."""

from __future__ import annotations

import random

import pytest

from consensus.errors import InvalidError
from consensus.optimizer import Momentum, rdiv, step
from consensus.selection import Candidate, Contribution, RoundFacts, drop_parent_ties, ranked

BETA = Momentum(7, 10, 256)


def test_rdiv_rounds_to_nearest_halves_up_for_any_sign() -> None:
    assert [rdiv(a, 4) for a in (-6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6)] == [
        -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 2,
    ]  # fmt: skip
    rng = random.Random(1)
    for _ in range(2000):
        a, b = rng.randint(-(10**12), 10**12), rng.randint(1, 10**6)
        r = rdiv(a, b)
        assert abs(2 * (a - r * b)) <= b and (2 * (a - r * b) != b)  # nearest, ties up


def test_first_step_from_rest_is_the_aggregate_then_momentum_carries_on() -> None:
    g, v = [10, -4, 0], [0, 0, 0]
    g1, v1 = step(g, v, [12, -6, 0], BETA)
    assert g1 == [12, -6, 0] and v1 == [512, -512, 0]
    g2, v2 = step(g1, v1, g1, BETA)  # an aggregate equal to G: momentum alone moves it
    assert v2 == [rdiv(7 * 512, 10), rdiv(-7 * 512, 10), 0] == [358, -358, 0]
    assert g2 == [12 + 1, -6 - 1, 0]


def test_without_momentum_the_step_is_plain_averaging() -> None:
    rng = random.Random(2)
    g = [rng.randint(-500, 500) for _ in range(50)]
    v = [0] * 50
    for _ in range(5):
        m = [x + rng.randint(-9, 9) for x in g]
        g, v = step(g, v, m, Momentum(0, 1, 256))
        assert g == m


def test_bad_spec_and_sizes_are_refused() -> None:
    with pytest.raises(InvalidError, match="beta_num < beta_den"):
        Momentum(10, 10, 256)
    with pytest.raises(InvalidError, match="differ in size"):
        step([1], [0, 0], [1], BETA)


FACTS = RoundFacts(b"h" * 32, 16, 9, b"P" * 32)


def _cands(ks: list[int]) -> list[Candidate]:
    return [Candidate(bytes([i]) * 32, k, bytes([i + 1]) * 32) for i, k in enumerate(ks)]


def test_parent_ties_are_dropped_worst_first_while_the_guard_holds() -> None:
    cands = _cands([12, 9, 11, 9, 9, 10])
    chosen = tuple(Contribution(c.participant, 1) for c in ranked(cands, FACTS.batch_hash))
    kept = drop_parent_ties(chosen, cands, FACTS, 3)
    ks = {c.participant: c.k for c in cands}
    assert [ks[c.participant] for c in kept] == [12, 11, 10]
    four = drop_parent_ties(chosen, cands, FACTS, 4)  # the guard keeps the best-ranked tie
    assert len(four) == 4 and sum(ks[c.participant] == 9 for c in four) == 1
    assert four[-1] == chosen[3]
    assert drop_parent_ties(chosen[:3], cands, FACTS, 3) == chosen[:3]
