"""The honest member's and aggregator's decisions in the aggregation round (protocol v5).

Pure functions over what a node has seen (docs/protocol.md §10, "Honest policy"):
which Selection a member answers, which pairs it reveals, which Complete it unmasks
for, and when a keep-parent head may open the next round. Each rule closes an attack
of the v2 review: a member answers only the proposer whose turn it is and only a
selection over the round's proofs (no chosen subsets, no copies), reveals a pair's
secret only to settle a disagreement it can see (no baseless disputes), never
unmasks a selection with a reveal and never reveals after unmasking (no sum is ever
computable with a pairwise mask opened).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from consensus import secagg
from consensus.secagg import Complete, Dispute, MaskedUpdate, Selection


class Answer(enum.Enum):
    ANSWER = "answer"
    WAIT = "wait"  # not yet: a proof is not verified here, or the proposer's turn is ahead
    REFUSE = "refuse"  # never: answering could only help an attack


@dataclass(frozen=True)
class AnswerDecision:
    answer: Answer
    reason: str = ""
    until_ms: int | None = None  # WAIT for the proposer's turn: look again then


@dataclass(frozen=True)
class SelectionView:
    """What a member knows of a Selection when it decides whether to answer it."""

    selection: Selection
    received_ms: int  # when this node first held it
    proposer_rank: int | None  # the proposer's rank among the listed proofs (None: unlisted)
    rule_members: tuple[bytes, ...]  # whom the rule selects from the listed proofs, sorted


def answer_decision(
    me: bytes,
    view: SelectionView,
    verified: Mapping[bytes, int],
    droppable: Collection[bytes],
    turn_ms: Sequence[int],
    now_ms: int,
    grace_ms: int,
    distrusted: Collection[bytes],
) -> AnswerDecision:
    """Whether member `me` sends its masked vector to a selection.

    `verified`: commit id -> when this node verified it, for every valid proof of the
    round on the selection's parent; `droppable`: commit ids an earlier attempt of the
    same proposer listed for members it may have found silent or wrong; `turn_ms[i-1]`:
    when rank i's turn comes on this node's clock (rank 1 from the reveal);
    `distrusted`: partners whose pairwise secret is public this round (each one proven
    to have lied about a shared mask).
    """
    sel = view.selection
    if me not in sel.members:
        return AnswerDecision(Answer.REFUSE, "we are not a member")
    if any(c not in verified for c in sel.proofs):
        return AnswerDecision(Answer.WAIT, "a listed proof is not verified here yet")
    rank = view.proposer_rank
    if rank is None or rank > len(turn_ms):
        return AnswerDecision(Answer.REFUSE, "its proposer has no proposing rank")
    if now_ms < turn_ms[rank - 1]:
        return AnswerDecision(Answer.WAIT, f"rank {rank}'s turn is ahead", turn_ms[rank - 1])
    listed = set(sel.proofs)
    omitted = [
        c
        for c, at in verified.items()
        if c not in listed and c not in droppable and at + grace_ms <= view.received_ms
    ]
    if omitted:
        return AnswerDecision(
            Answer.REFUSE, f"it leaves out {len(omitted)} valid proofs this node held in time"
        )
    if view.rule_members != sel.members:
        return AnswerDecision(Answer.REFUSE, "its members are not the rule's selection")
    if set(sel.members) & set(distrusted):
        return AnswerDecision(Answer.REFUSE, "it pairs us with a member proven to have lied")
    return AnswerDecision(Answer.ANSWER)


def droppable_proofs(
    sel: Selection, earlier: Sequence[Selection], commit_of: Mapping[bytes, bytes]
) -> frozenset[bytes]:
    """The commit ids a later attempt may leave out: those of members of the same
    proposer's earlier attempts on the same parent (the aggregator drops silent or
    wrong members, never a proof it did not try). `commit_of`: participant -> commit id."""
    members = {
        m
        for e in earlier
        if e.proposer == sel.proposer and e.parent == sel.parent and e.attempt < sel.attempt
        for m in e.members
    }
    return frozenset(commit_of[m] for m in members if m in commit_of)


def partners_to_reveal(
    me: bytes,
    sel: Selection,
    dispute: Dispute,
    updates: Mapping[bytes, MaskedUpdate],
    unmasked_any: bool,
    revealed: Collection[bytes],
) -> list[bytes]:
    """The partners of `me` whose shared point we reveal for a disputed selection: those
    the Dispute names with us whose own update commits another point for our pair than
    ours (so the partner lied, and the point is one it knows already). Nothing after we
    unmasked anything this round; `revealed`: partners already revealed for `sel`."""
    mine = updates.get(me)
    if unmasked_any or mine is None:
        return []
    out = []
    for pid in dispute.pairs:
        a, b = secagg.pair_of(pid)
        partner = b if a == me else a if b == me else None
        if partner is None or partner in revealed or partner not in updates:
            continue
        ours = secagg.pair_commitment(updates, sel.members, me, partner)
        theirs = secagg.pair_commitment(updates, sel.members, partner, me)
        if ours != theirs:
            out.append(partner)
    return out


def named_by_reveals(
    sel: Selection,
    updates: Mapping[bytes, MaskedUpdate],
    pairs: Sequence[bytes],
    true: Mapping[bytes, bytes],
) -> list[bytes]:
    """The members a Dispute's settlement drops, sorted: for each disputed pair, whoever
    committed another point than the pair's true mask (`true`: pair id -> L(u) from its
    revealed shared point); a pair nobody settled (absent from `true`) loses both."""
    wrong: set[bytes] = set()
    for pid in pairs:
        a, b = secagg.pair_of(pid)
        if pid not in true:
            wrong.update((a, b))
            continue
        for i, j in ((a, b), (b, a)):
            if secagg.pair_commitment(updates, sel.members, i, j) != true[pid]:
                wrong.add(i)
    return sorted(wrong)


def unmask_choice(
    me: bytes,
    completes: Sequence[tuple[Selection, Complete]],
    our_updates: Mapping[bytes, bytes],
    disputed: Collection[bytes],
    revealed: Collection[bytes],
    distrusted: Collection[bytes],
    unmasked: bytes | None,
    recovering: Collection[bytes] = (),
) -> bytes | None:
    """The selection we reveal our self-mask seed for, if any: the first Complete (in
    arrival order) that lists our own update, of a selection with no Dispute, no
    pairwise reveal and no member whose shared point with us is public; never a second
    one in a round. `our_updates`: selection hash -> the hash of the update we sent;
    `revealed`: selections with any PairReveal; `distrusted`: partners whose shared
    point with us was revealed this round (by either side); `recovering`: selections
    where shares of our seed are public (version 5: the others took us for silent), the
    only ones we may then unmask, so our seed is open for one selection at most."""
    if unmasked is not None:
        return None
    for sel, comp in completes:
        h = sel.hash()
        ours = our_updates.get(h)
        if ours is None or h in disputed or h in revealed or me not in sel.members:
            continue
        if recovering and h not in recovering:
            continue
        if set(sel.members) & set(distrusted):
            continue
        if comp.updates[sel.members.index(me)] == ours:
            return h
    return None


@dataclass(frozen=True)
class ShareDecision:
    owners: tuple[bytes, ...]  # whose seed share we reveal now
    until_ms: int | None = None  # look again then (the grace after Complete runs)


def shares_to_reveal(
    me: bytes,
    sel: Selection,
    comp: Complete,
    updates: Mapping[bytes, MaskedUpdate],
    unmasked_here: Collection[bytes],
    unmasked_elsewhere: Collection[bytes],
    our_choice: bytes | None,
    disputed: bool,
    shared_already: Collection[bytes],
    complete_ms: int,
    now_ms: int,
    grace_ms: int,
) -> ShareDecision:
    """Dropout recovery (version 5): whose self-seed share `me` reveals for a completed
    selection. Only for the selection we unmasked ourselves (`our_choice`: our one
    computable sum of the round), with no Dispute (no pairwise secret of it may be
    public), once `grace_ms` passed since its Complete reached us; for each member whose
    update the Complete lists and who has not unmasked it (`unmasked_here`) nor any other
    selection of the round (`unmasked_elsewhere`: then it chose another sum, and opening
    this one too would give two), and whom we have not shared for (`shared_already`)."""
    h = sel.hash()
    if our_choice != h or disputed or me not in sel.members:
        return ShareDecision(())
    if now_ms < complete_ms + grace_ms:
        return ShareDecision((), complete_ms + grace_ms)
    owners = tuple(
        m
        for i, m in enumerate(sel.members)
        if m != me
        and m not in unmasked_here
        and m not in unmasked_elsewhere
        and m not in shared_already
        and m in updates
        and updates[m].hash() == comp.updates[i]
    )
    return ShareDecision(owners)


def proposal_due(scheduled_ms: int, enough_ms: int, rank: int, fallback_ms: int) -> int:
    """When an aggregating proposer of `rank` goes: at its scheduled time, or, when the
    round's proofs rested on enough sealed commits only later (`enough_ms`: late proofs
    on a busy machine), rank 1 then and each later rank one fallback delay after the one
    before, so honest proposers never aggregate at once (members unmask one sum only)."""
    return max(scheduled_ms, enough_ms + (rank - 1) * fallback_ms)


def keep_parent_opens_next_at(seen_ms: int, last_activity_ms: int, fallback_ms: int) -> int:
    """When a keep-parent head of round r opens round r+1 (under an aggregating rule):
    once the round's aggregation has been quiet for two fallback delays since the block
    or its last message, whichever is later. An aggregate block of r opens r+1 at once,
    and the round's own end still bounds the wait: a cheap block cannot cut short the
    members' work, and a round whose aggregate failed goes on soon after."""
    return max(seen_ms, last_activity_ms) + 2 * fallback_ms
