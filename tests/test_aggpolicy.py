"""The honest member's decisions (consensus.aggpolicy; whom to answer: data-driven,
tests/vectors/aggpolicy.json) and the keep-parent rules around them
(consensus.policy.blocking_sibling, node.roundclock's hold)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from consensus import aggpolicy, policy
from consensus.aggpolicy import Answer, SelectionView
from consensus.forkchoice import ChainNode
from consensus.secagg import Complete, MaskedUpdate, Selection
from node.roundclock import RoundClock
from support.chainfactory import make_chain

A, B, C, D = (bytes([i]) * 32 for i in range(1, 5))
P1, P2, P3, P4 = (bytes([0x10 + i]) * 32 for i in range(1, 5))  # their commit ids
TURNS = [0, 1000, 2000]  # rank 1 from the reveal, then one fallback delay each


VECTORS = json.loads((Path(__file__).parent / "vectors" / "aggpolicy.json").read_text())


def b32(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


def _view(
    proofs: tuple[bytes, ...],
    members: tuple[bytes, ...],
    attempt: int = 0,
    proposer: bytes = A,
) -> SelectionView:
    sel = Selection(0, bytes(32), proposer, attempt, tuple(sorted(proofs)), members, bytes(64))
    return SelectionView(sel, 5000, 1, members)


@pytest.mark.parametrize("case", VECTORS["answer"], ids=[c["name"] for c in VECTORS["answer"]])
def test_answer_vectors(case: dict[str, Any]) -> None:
    members = tuple(sorted(b32(m) for m in case["members"]))
    sel = Selection(
        0, bytes(32), b32("A"), 0, tuple(sorted(b32(p) for p in case["proofs"])), members, bytes(64)
    )
    rule = case.get("rule_members")
    view = SelectionView(
        sel,
        case.get("received", 5000),
        case.get("rank", 1),
        members if rule is None else tuple(sorted(b32(m) for m in rule)),
    )
    d = aggpolicy.answer_decision(
        b32("B"),
        view,
        {b32(p): t for p, t in case["verified"].items()},
        frozenset(b32(p) for p in case.get("droppable", [])),
        TURNS,
        case.get("now", 5000),
        500,
        frozenset(b32(m) for m in case.get("distrusted", [])),
    )
    assert d.answer is Answer(case["answer"]), d.reason
    if "until" in case:
        assert d.until_ms == case["until"]


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


def _completed(members: tuple[bytes, ...]) -> tuple[Selection, Complete, dict[bytes, MaskedUpdate]]:
    sel = Selection(0, bytes(32), members[0], 0, (P1,), members, bytes(64))
    updates = {
        m: MaskedUpdate(sel.hash(), m, bytes(32), (), bytes(32), (), (), bytes(64)) for m in members
    }
    comp = Complete(sel.hash(), tuple(updates[m].hash() for m in members), bytes(64))
    return sel, comp, updates


def test_shares_are_revealed_for_our_own_sum_only_after_the_grace() -> None:
    """Dropout recovery's policy: for the selection we unmasked, once fallback/2 passed
    since its Complete, of each member that unmasked neither it nor another selection."""
    sel, comp, updates = _completed((A, B, C))
    h = sel.hash()

    def decide(**kw: Any) -> aggpolicy.ShareDecision:
        args: dict[str, Any] = dict(
            unmasked_here={B},
            unmasked_elsewhere=set(),
            our_choice=h,
            disputed=False,
            shared_already=set(),
            complete_ms=1000,
            now_ms=2000,
            grace_ms=500,
        )
        args.update(kw)
        return aggpolicy.shares_to_reveal(B, sel, comp, updates, **args)

    assert decide().owners == (A, C)
    assert decide(now_ms=1200) == aggpolicy.ShareDecision((), 1500)  # wait for the grace
    assert decide(our_choice=None).owners == ()  # we unmasked nothing (or another sum)
    assert decide(our_choice=b"\x09" * 32).owners == ()
    assert decide(disputed=True).owners == ()  # a pairwise secret may be public
    assert decide(unmasked_here={A, B}).owners == (C,)
    assert decide(unmasked_elsewhere={C}).owners == (A,)  # C chose another sum
    assert decide(shared_already={A}).owners == (C,)
    other = dict(updates)
    other[C] = MaskedUpdate(h, C, bytes(64), (), bytes(32), (), (), bytes(64))
    assert aggpolicy.shares_to_reveal(
        B, sel, comp, other, {B}, set(), h, False, set(), 1000, 2000, 500
    ).owners == (A,)  # C's update held here is not the one the Complete lists


def test_a_member_whose_seed_is_being_recovered_unmasks_only_that_selection() -> None:
    s1, c1, u1 = _completed((A, B, C))
    s2 = Selection(0, bytes(32), B, 0, (P2,), (A, B, C), bytes(64))
    u2 = {
        m: MaskedUpdate(s2.hash(), m, bytes(32), (), bytes(32), (), (), bytes(64))
        for m in (A, B, C)
    }
    c2 = Complete(s2.hash(), tuple(u2[m].hash() for m in (A, B, C)), bytes(64))
    ours = {s1.hash(): u1[A].hash(), s2.hash(): u2[A].hash()}
    completes = [(s1, c1), (s2, c2)]
    assert aggpolicy.unmask_choice(A, completes, ours, (), (), (), None) == s1.hash()
    got = aggpolicy.unmask_choice(A, completes, ours, (), (), (), None, {s2.hash()})
    assert got == s2.hash()
