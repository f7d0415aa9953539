"""The honest member's decisions (consensus.aggpolicy) and the keep-parent rules around
them (consensus.policy.blocking_sibling, node.roundclock's hold), case by case."""

from __future__ import annotations

import trio
import trio.testing

from consensus import aggpolicy, policy
from consensus.aggpolicy import Answer, SelectionView
from consensus.forkchoice import ChainNode
from consensus.secagg import Selection
from node.roundclock import RoundClock
from support.chainfactory import make_chain

A, B, C, D, E = (bytes([i]) * 32 for i in range(1, 6))
P1, P2, P3, P4, P5 = (bytes([0x10 + i]) * 32 for i in range(1, 6))  # their commit ids
TURNS = [0, 1000, 2000]  # rank 1 from the reveal, then one fallback delay each


def _view(
    proofs: tuple[bytes, ...],
    members: tuple[bytes, ...],
    rank: int | None = 1,
    rule: tuple[bytes, ...] | None = None,
    received: int = 5000,
    attempt: int = 0,
    proposer: bytes = A,
) -> SelectionView:
    sel = Selection(0, bytes(32), proposer, attempt, tuple(sorted(proofs)), members, bytes(64))
    return SelectionView(sel, received, rank, members if rule is None else rule)


def _decide(
    view: SelectionView,
    verified: dict[bytes, int],
    now: int = 5000,
    droppable: frozenset[bytes] = frozenset(),
    distrusted: frozenset[bytes] = frozenset(),
    me: bytes = B,
) -> aggpolicy.AnswerDecision:
    return aggpolicy.answer_decision(me, view, verified, droppable, TURNS, now, 500, distrusted)


ALL = {P1: 0, P2: 0, P3: 0, P4: 0}


def test_the_rules_selection_over_every_proof_from_the_proposer_in_turn_is_answered() -> None:
    d = _decide(_view((P1, P2, P3, P4), (A, B, C)), ALL)
    assert d.answer is Answer.ANSWER


def test_a_proof_not_verified_here_yet_makes_the_member_wait() -> None:
    d = _decide(_view((P1, P2, P3, P4), (A, B, C)), {P1: 0, P2: 0, P3: 0})
    assert d.answer is Answer.WAIT


def test_a_later_rank_is_answered_only_from_its_turn() -> None:
    view = _view((P1, P2, P3, P4), (A, B, C), rank=3)
    early = _decide(view, ALL, now=1500)
    assert early.answer is Answer.WAIT and early.until_ms == 2000
    assert _decide(view, ALL, now=2000).answer is Answer.ANSWER
    # a rank past max_rank never gets a turn
    assert _decide(_view((P1, P2, P3, P4), (A, B, C), rank=4), ALL).answer is Answer.REFUSE
    # nor does a proposer whose proof the selection does not list
    assert _decide(_view((P1, P2, P3, P4), (A, B, C), rank=None), ALL).answer is Answer.REFUSE


def test_a_selection_that_leaves_out_a_proof_held_in_time_is_refused() -> None:
    view = _view((P1, P2, P3), (A, B, C))
    d = _decide(view, ALL)
    assert d.answer is Answer.REFUSE and "leaves out 1" in d.reason
    # a proof this node verified only just before the selection arrived is tolerated
    assert _decide(view, {**ALL, P4: 4600}).answer is Answer.ANSWER
    # and a later attempt may drop the members of earlier attempts (silent or wrong)
    assert _decide(view, ALL, droppable=frozenset({P4})).answer is Answer.ANSWER


def test_members_that_are_not_the_rules_are_refused() -> None:
    d = _decide(_view((P1, P2, P3, P4), (A, B, C), rule=(A, B, D)), ALL)
    assert d.answer is Answer.REFUSE and "rule's" in d.reason


def test_a_selection_with_a_proven_liar_is_refused() -> None:
    d = _decide(_view((P1, P2, P3, P4), (A, B, C)), ALL, distrusted=frozenset({C}))
    assert d.answer is Answer.REFUSE


def test_droppable_proofs_are_earlier_attempts_members_of_the_same_proposer() -> None:
    first = _view((P1, P2, P3, P4), (A, B, C)).selection
    other = _view((P1, P2, P3, P4), (D, B, C), proposer=D).selection
    later = _view((P1, P2, P4), (A, B, D), attempt=1).selection
    commit_of = {A: P1, B: P2, C: P3, D: P4}
    assert aggpolicy.droppable_proofs(later, [first, other, later], commit_of) == {P1, P2, P3}
    assert aggpolicy.droppable_proofs(first, [first, other], commit_of) == frozenset()


def test_a_keep_parent_sibling_does_not_make_the_aggregator_abstain() -> None:
    parent = ChainNode(b"p" * 32, bytes(32), 3, 40)
    keep = ChainNode(b"k" * 32, parent.hash, 4, 41)
    agg = ChainNode(b"a" * 32, parent.hash, 4, 42)
    assert policy.blocking_sibling(keep, parent, aggregates=True) is None
    assert policy.blocking_sibling(agg, parent, aggregates=True) == agg
    assert policy.blocking_sibling(keep, parent, aggregates=False) == keep  # winner: any block


def test_a_keep_parent_head_opens_the_next_round_once_the_aggregation_is_quiet() -> None:
    assert aggpolicy.keep_parent_opens_next_at(10_000, 0, 1000) == 12_000
    assert aggpolicy.keep_parent_opens_next_at(10_000, 11_500, 1000) == 13_500


async def test_the_round_clock_holds_a_round_after_a_keep_parent_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Attack 3 of the v2 review: a cheap keep-parent head opened the next round at once,
    cancelling the members' aggregation. Now it opens the round after it only when the
    hold has passed, and an aggregate head of the same round opens it at once."""
    g = make_chain().genesis
    now = [g.timing.genesis_ms]
    clock = RoundClock(g, lambda: now[0])
    clock.start(None)
    hold_until = [g.timing.genesis_ms + 3000]
    clock.observe(head_round=0, hold=lambda: hold_until[0])
    assert clock.current == 0
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def wait() -> None:
            await clock.wait_past(0, g.timing.genesis_ms + 60_000)
            done.set()

        nursery.start_soon(wait)
        await trio.sleep(0.01)
        now[0] += 2000  # the aggregation was busy: the hold moves on
        hold_until[0] += 2000
        await trio.sleep(2)
        assert clock.current == 0
        now[0] = hold_until[0]
        await trio.sleep(3)
        await done.wait()
    assert clock.current == 1 and clock.opened_at(1) == hold_until[0]
    # an aggregate head opens the next round at once, whatever is held
    clock.observe(head_round=1, hold=lambda: now[0] + 10_000)
    clock.observe(head_round=1)
    assert clock.current == 2
