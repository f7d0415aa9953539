"""Protocol v4's aggregation against a malicious participant (issue: the v2 review's
attacks), fast and in memory (support.aggsim): honest members decide by
consensus.aggpolicy and receive every message through consensus.aggcheck; one
adversary (or a coalition, where the attack needs one) plays each strategy; the
observer holds the adversary's keys and models plus everything gossiped and runs the
linear algebra an attacker would. Each attack is also run against members weakened
to protocol v2's policy, where it must succeed: the observer can fail."""

from __future__ import annotations

import pytest

from consensus import secagg
from consensus.secagg import Dispute, MaskedUpdate, PairReveal, Selection
from support.aggsim import FALLBACK_MS, Party, Sim, recover


def _answer_as_adversary(sim: Sim, *, lie_with: dict[bytes, bytes] | None = None) -> None:
    """The coalition's members answer every selection naming them (a liar lies on one
    pair) and unmask every Complete: what helps an observer most."""
    for p in sim.adversary:
        for h, sel in list(sim.agg.selections.items()):
            if p.public not in sel.members or p.public in sim.agg.updates.get(h, {}):
                continue
            partner = (lie_with or {}).get(p.public)
            sim.publish(sim.masked_update(p, sel, partner if partner in sel.members else None))
        for h in list(sim.agg.completes):
            sel = sim.agg.selections[h]
            if p.public in sel.members and p.public not in sim.agg.unmasks.get(h, {}):
                sim.publish(sim.unmask(p, sel))


def _honest_models(sim: Sim) -> dict[bytes, list[int]]:
    return {p.public: p.model for p in sim.honest}


def _leaked(sim: Sim) -> dict[bytes, list[int]]:
    """Honest models the observer recovered exactly."""
    truth = _honest_models(sim)
    return {k: v for k, v in sim.recover().items() if truth[k] == v}


def _copy_and_dispute(sim: Sim, *, before: bool) -> None:
    """Attack 1: a non-selected participant copies the honest Selection's proof list under
    its own signature and disputes every pair of it, though no commitments disagree
    (`before`: its copy and Dispute come before the honest Selection)."""
    adv = sim.adversary[0]
    state = {"copied": None}

    def react(s: Sim) -> None:
        if state["copied"] is None:
            copy = s.selection(adv, s.parties)
            s.publish(copy)
            state["copied"] = copy
        copy = state["copied"]
        assert isinstance(copy, Selection)
        pairs = [secagg.pair_id(a, b) for a in copy.members for b in copy.members if a < b]
        disputed = any(isinstance(d, Dispute) and d.selection == copy.hash() for d in s.log)
        if not disputed and (s.agg.updates.get(copy.hash()) or before):
            s.publish(s.dispute(adv, copy, pairs))

    sim.react = react
    if before:
        react(sim)


@pytest.mark.parametrize("before", [False, True])
def test_a_copied_selection_and_a_baseless_dispute_leak_nothing(before: bool) -> None:
    sim = Sim([1, 5, 4, 3], adversaries=1)  # the adversary is ranked last, not selected
    _copy_and_dispute(sim, before=before)
    total = sim.honest_aggregation(sim.parties[1])
    assert total == [sum(p.model[j] for p in sim.honest) for j in range(4)]  # still aggregates
    assert not any(isinstance(m, PairReveal) for m in sim.log)
    copy = next(
        m for m in sim.log if isinstance(m, Selection) and m.proposer == sim.parties[0].public
    )
    assert not sim.agg.updates.get(copy.hash())  # out of turn: nobody answered it
    assert _leaked(sim) == {}


def test_the_copy_and_dispute_attack_works_against_v2_members() -> None:
    sim = Sim([1, 5, 4, 3], adversaries=1, weakened=True)
    _copy_and_dispute(sim, before=False)
    sim.honest_aggregation(sim.parties[1])
    assert _leaked(sim) == _honest_models(sim)  # every honest model, exactly


def _subset(sim: Sim) -> Selection:
    """Attack 2: the in-turn proposer lists only its own, its colluder's and the victim's
    proofs, so the rule over that list selects exactly those three."""
    adv, colluder = sim.adversary
    victim = sim.honest[0]
    sel = sim.selection(adv, [adv, colluder, victim])
    assert sorted(sel.members) == sorted([adv.public, colluder.public, victim.public])
    sim.react = lambda s: _answer_as_adversary(s)
    sim.publish(sel)
    sim.settle()
    comp = sim.complete(adv, sel)
    if comp is not None:
        sim.publish(comp)
        sim.settle()
    return sel


KS_SUBSET = [9, 8, 5, 4, 3, 2, 1, 1]  # proposer and colluder rank 1 and 2; 8 participants


def test_a_chosen_subset_is_refused_and_isolates_nobody() -> None:
    sim = Sim(KS_SUBSET, adversaries=2)
    sel = _subset(sim)
    assert sim.honest[0].public not in sim.agg.updates.get(sel.hash(), {})  # the victim refused
    # the same proposer's honest selection (the rule's over every proof) still aggregates
    total = sim.honest_aggregation(sim.adversary[0], first=1)
    assert total is not None
    assert _leaked(sim) == {}


def test_the_subset_attack_works_against_v2_members() -> None:
    sim = Sim(KS_SUBSET, adversaries=2, weakened=True)
    _subset(sim)
    assert set(_leaked(sim)) == {sim.honest[0].public}


def test_out_of_turn_and_repeated_selections_cost_honest_members_nothing() -> None:
    """Attack 5: a low-ranked participant publishes a selection per attempt number (and a
    second list under one number, an equivocation, never kept)."""
    sim = Sim([1, 5, 4, 3, 2, 2], adversaries=1)
    adv = sim.adversary[0]
    for attempt in range(secagg.MAX_ATTEMPTS):
        sim.publish(sim.selection(adv, sim.parties, attempt))
    sim.publish(sim.selection(adv, sim.parties[:5], 0))
    sim.settle()
    assert len(sim.agg.selections) == secagg.MAX_ATTEMPTS
    assert not any(isinstance(m, MaskedUpdate) for m in sim.log)
    weak = Sim([1, 5, 4, 3, 2, 2], adversaries=1, weakened=True)
    for attempt in range(secagg.MAX_ATTEMPTS):
        weak.publish(weak.selection(weak.adversary[0], weak.parties, attempt))
    weak.settle()
    assert sum(isinstance(m, MaskedUpdate) for m in weak.log) == 3 * secagg.MAX_ATTEMPTS


def test_a_lying_member_is_named_alone_and_nothing_leaks() -> None:
    """A selected member commits a false pairwise mask with one partner: the honest
    aggregator disputes that pair only (a real disagreement), the partner reveals the
    shared point (which the liar knows anyway), the liar is dropped and the next attempt
    aggregates the honest members."""
    sim = Sim([5, 6, 4, 3, 2, 1], adversaries=1)  # selected: the aggregator, it, the victim
    adv, victim = sim.adversary[0], sim.honest[1]
    sim.react = lambda s: _answer_as_adversary(s, lie_with={adv.public: victim.public})
    total = sim.honest_aggregation(sim.honest[0])
    reveals = [m for m in sim.log if isinstance(m, PairReveal)]
    assert [(r.member, r.partner) for r in reveals] == [(victim.public, adv.public)]
    last = [m for m in sim.log if isinstance(m, Selection)][-1]
    assert adv.public not in last.members and total is not None
    assert total == [
        sum(p.model[j] for p in sim.honest if p.public in last.members) for j in range(4)
    ]
    assert _leaked(sim) == {}


def test_the_observer_finds_a_model_when_one_is_exposed() -> None:
    """The observer itself can succeed: a member that unmasks the selection whose pair
    secrets are all public is recovered exactly (so `_leaked() == {}` means something)."""
    sim = Sim([1, 5, 4, 3], adversaries=1)
    sel = sim.selection(sim.parties[1], sim.parties)
    sim.publish(sel)
    sim.settle()
    p: Party = sim.honest[1]
    log = [*sim.log, sim.unmask(p, sel)]
    for o in secagg.others_of(sel.members, p.public):
        unsigned = secagg.reveal_pair(p.secret, p.public, o, sim.mask_keys[o], sel.hash())
        log.append(unsigned)
    secrets = {q.public: q.secret for q in sim.adversary}
    got = recover(log, secrets, [q.public for q in sim.honest], sim.mask_keys)
    assert got == {p.public: p.model}


# ---------------------------------------------------------------- dropout recovery (v5)


def test_a_member_silent_after_complete_is_in_the_exact_aggregate_and_nothing_leaks() -> None:
    """One honest member sends its vector and is gone: the others' shares of its self
    seed finish the sum, which is exactly the three members' models together."""
    sim = Sim([5, 4, 3, 1], adversaries=0)
    sim.dropped.add(sim.parties[1].public)
    total = sim.honest_aggregation(sim.parties[0])
    members = sim.parties[:3]
    assert total == [sum(p.model[j] for p in members) for j in range(4)]
    assert sim.parties[1].public not in sim.agg.unmasks.get(next(iter(sim.agg.completes)), {})
    assert _leaked(sim) == {}


def test_fewer_survivors_than_the_threshold_finish_nothing_and_leak_nothing() -> None:
    """Two of three members are gone after their vectors: the one survivor's share is
    below t = 2, so the sum stays masked; an observer (with a participant's keys, not
    selected) learns nothing from what was published."""
    sim = Sim([1, 5, 4, 3], adversaries=1)
    sim.dropped.update({sim.parties[2].public, sim.parties[3].public})
    sim.react = _answer_as_adversary
    assert sim.honest_aggregation(sim.parties[1]) is None
    assert _leaked(sim) == {}


def _two_sums_differing_by_one(sim: Sim) -> None:
    """An in-turn adversary proposer completes attempt 0 over {P, A, B, V}, then attempt 1
    without V ("silent": droppable), completes it too and never unmasks: A and B's seeds
    for attempt 1 can only come from shares; with both sums V = sum0 - sum1."""
    adv = sim.parties[0]
    sel0 = sim.selection(adv, sim.parties)
    sim.react = _answer_as_adversary
    sim.publish(sel0)
    sim.settle()
    comp0 = sim.complete(adv, sel0)
    assert comp0 is not None and len(sel0.members) == 4
    sim.publish(comp0)
    sim.settle()
    victim = sel0.members[-1] if sel0.members[-1] != adv.public else sel0.members[0]
    kept = [p for p in sim.parties if p.public != victim]
    sel1 = sim.selection(adv, kept, attempt=1)
    assert set(sel1.members) == set(sel0.members) - {victim}
    sim.publish(sel1)
    sim.settle()
    comp1 = sim.complete(adv, sel1)
    assert comp1 is not None
    sim.publish(comp1)
    sim.now += 10 * FALLBACK_MS
    sim.settle()


@pytest.mark.parametrize("weak", [False, True])
def test_shares_never_open_a_second_sum(weak: bool) -> None:
    """Members reveal shares only for the one selection they unmasked, and never of a
    member that unmasked another: against members that share for any Complete (the
    weakened policy) the observer recovers the dropped member's model."""
    sim = Sim([9, 5, 5, 4, 3, 2, 1], adversaries=1, weak_shares=weak)
    _two_sums_differing_by_one(sim)
    leaked = _leaked(sim)
    if weak:
        assert leaked, "the weakened policy should leak the victim"
    else:
        assert leaked == {}
