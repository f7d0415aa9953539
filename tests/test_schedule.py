"""Round schedule arithmetic over the genesis timing: slots, deadlines from a round's opening."""

from __future__ import annotations

import pytest

from consensus import schedule
from support.chainfactory import make_chain

G = make_chain().genesis
T0 = G.timing.genesis_ms


def test_slot_round_maps_times_to_slots() -> None:
    assert schedule.slot_round(G, T0 - 1) is None
    assert schedule.slot_round(G, T0) == 0
    assert schedule.slot_round(G, T0 + 9_999) == 0
    assert schedule.slot_round(G, T0 + 10_000) == 1
    assert schedule.slot_start(G, 7) == T0 + 70_000


def test_deadlines_and_fallback_times_count_from_the_round_opening() -> None:
    opened = T0 + 20_000
    assert schedule.commit_deadline(G, opened) == T0 + 20_000 + 3_000
    assert schedule.proof_deadline(G, opened) == T0 + 20_000 + 6_000
    assert schedule.proposal_time(G, opened, 1) == T0 + 26_000
    assert schedule.proposal_time(G, opened, 3) == T0 + 28_000
    assert schedule.proposal_time(G, opened, 3) < schedule.round_end(G, opened)
    assert schedule.round_end(G, opened) == schedule.slot_start(G, 3)
    with pytest.raises(ValueError):
        schedule.proposal_time(G, opened, 4)


def test_the_chain_has_one_round_per_evaluation_batch() -> None:
    assert schedule.round_exists(G, 0) and schedule.round_exists(G, 7)
    assert not schedule.round_exists(G, 8)
    assert schedule.is_last_round(G, 7)


@pytest.mark.parametrize(
    ("now", "head_round", "expected"),
    [
        (T0 - 5, None, (0, T0)),  # before genesis: round 0 at genesis
        (T0 + 25_000, None, (2, T0 + 20_000)),  # no blocks: the slot's round, from its slot
        (T0 + 25_000, 0, (2, T0 + 20_000)),  # an old head: the slot is later
        (T0 + 25_000, 4, (5, T0 + 25_000)),  # rounds ran ahead of the slots: now
    ],
)
def test_a_starting_node_joins_the_latest_round_it_can_know(
    now: int, head_round: int | None, expected: tuple[int, int]
) -> None:
    assert schedule.first_round(G, now, head_round) == expected


@pytest.mark.parametrize(
    ("current", "head_round", "revealed", "expected"),
    [
        (3, None, None, 3),
        (3, 3, None, 4),  # a block of the current round ends it
        (3, 1, None, 3),  # an old block (sync) never moves rounds back
        (3, None, 6, 6),  # the publisher is revealing a later round: catch up
        (3, 5, 4, 6),
    ],
)
def test_rounds_advance_on_blocks_and_reveals_and_never_go_back(
    current: int, head_round: int | None, revealed: int | None, expected: int
) -> None:
    assert schedule.next_round(current, head_round, revealed) == expected
