"""Round schedule arithmetic over the genesis clock."""

from __future__ import annotations

import pytest

from consensus import schedule
from support.chainfactory import make_chain

G = make_chain().genesis
T0 = G.timing.genesis_ms


def test_round_at_maps_times_to_slots() -> None:
    assert schedule.round_at(G, T0 - 1) is None
    assert schedule.round_at(G, T0) == 0
    assert schedule.round_at(G, T0 + 9_999) == 0
    assert schedule.round_at(G, T0 + 10_000) == 1
    assert schedule.round_start(G, 7) == T0 + 70_000


def test_deadlines_and_fallback_times_follow_the_genesis_timing() -> None:
    assert schedule.commit_deadline(G, 2) == T0 + 20_000 + 3_000
    assert schedule.proof_deadline(G, 2) == T0 + 20_000 + 6_000
    assert schedule.proposal_time(G, 2, 1) == T0 + 26_000
    assert schedule.proposal_time(G, 2, 3) == T0 + 28_000
    assert schedule.proposal_time(G, 2, 3) < schedule.round_start(G, 3)
    with pytest.raises(ValueError):
        schedule.proposal_time(G, 2, 4)


def test_the_chain_has_one_round_per_evaluation_batch() -> None:
    assert schedule.round_exists(G, 0) and schedule.round_exists(G, 7)
    assert not schedule.round_exists(G, 8)
    assert schedule.is_last_round(G, 7)
