"""What a node holds of a round's aggregation (protocol v5; consensus.aggcheck says
which messages are valid, consensus.aggpolicy what an honest node does with them).

Every message is bounded per round: one selection per proposer and attempt (at most
secagg.MAX_ATTEMPTS per proposer), one update (and, v7, each of the parts it signed) and
one unmask per member and selection, one
Complete and one Dispute per selection, one PairReveal per disputed pair, one SeedShare
per revealer, owner and selection. Anything that
refers to a selection this node has not seen is ignored, not rejected (gossip may
reorder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from consensus import secagg
from consensus.secagg import (
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
    VectorPart,
)
from p2p import Verdict


@dataclass
class AggState:
    selections: dict[bytes, Selection] = field(default_factory=dict)  # by hash
    updates: dict[bytes, dict[bytes, MaskedUpdate]] = field(default_factory=dict)  # sel -> member
    update_ids: dict[bytes, MaskedUpdate] = field(default_factory=dict)  # the held ones by hash
    parts: dict[bytes, dict[int, bytes]] = field(
        default_factory=dict
    )  # v7: update -> index -> data
    completes: dict[bytes, Complete] = field(default_factory=dict)  # by selection
    unmasks: dict[bytes, dict[bytes, Unmask]] = field(default_factory=dict)  # sel -> member
    disputes: dict[bytes, Dispute] = field(default_factory=dict)  # by selection
    reveals: dict[bytes, dict[bytes, PairReveal]] = field(default_factory=dict)  # sel -> pair
    shares: dict[bytes, dict[bytes, dict[bytes, SeedShare]]] = field(
        default_factory=dict
    )  # sel -> owner -> revealer
    complete_ms: dict[bytes, int] = field(default_factory=dict)  # selection -> Complete held
    wrong_dealers: set[tuple[bytes, bytes]] = field(default_factory=set)  # (sel, owner): bad share
    answered: set[bytes] = field(default_factory=set)  # selections we sent our update for
    refused: set[bytes] = field(default_factory=set)  # selections we will never answer
    unmasked: bytes | None = None  # the one selection we revealed our self mask for
    received_ms: dict[bytes, int] = field(default_factory=dict)  # selection -> first held
    last_ms: int = 0  # when the round's aggregation last made progress here

    def add_selection(self, sel: Selection, now_ms: int) -> bool:
        """One selection per proposer and attempt: a second is an equivocation, ignored."""
        h = sel.hash()
        if h in self.selections:
            return False
        if any(
            s.proposer == sel.proposer and s.attempt == sel.attempt
            for s in self.selections.values()
        ):
            return False
        self.selections[h] = sel
        self.received_ms[h] = now_ms
        return True

    def conflicting(
        self, msg: Selection | Unmask | SeedShare
    ) -> Selection | Unmask | SeedShare | None:
        """The message held in `msg`'s slot (one Selection per proposer and attempt, one
        Unmask per member and selection, one SeedShare per revealer, owner and
        selection) if it differs from `msg`: together they are an equivocation."""
        held: Selection | Unmask | SeedShare | None
        if isinstance(msg, Selection):
            held = next(
                (
                    s
                    for s in self.selections.values()
                    if s.proposer == msg.proposer and s.attempt == msg.attempt
                ),
                None,
            )
        elif isinstance(msg, Unmask):
            held = self.unmasks.get(msg.selection, {}).get(msg.member)
        else:
            held = self.shares.get(msg.selection, {}).get(msg.owner, {}).get(msg.member)
        return held if held is not None and held != msg else None

    def distrusted(self, me: bytes, within: bytes | None = None) -> set[bytes]:
        """Partners whose shared point with `me` is public this round (either side
        revealed), or only by a reveal for the selection `within`."""
        out: set[bytes] = set()
        for h, pairs in self.reveals.items():
            if within is not None and h != within:
                continue
            for pid in pairs:
                a, b = secagg.pair_of(pid)
                if me in (a, b):
                    out.add(b if a == me else a)
        return out

    def add_update(self, upd: MaskedUpdate) -> bool:
        added = _first(self.updates, upd.selection, upd.member, upd)
        if added:
            self.update_ids[upd.hash()] = upd
        return added

    def add_part(self, part: VectorPart) -> bool:
        """A part of a held update (checked against it by consensus.aggcheck.check_part)."""
        held = self.parts.setdefault(part.update, {})
        if part.index in held:
            return False
        held[part.index] = part.data
        return True

    def whole(self, selection: bytes) -> dict[bytes, tuple[MaskedUpdate, tuple[bytes, ...]]]:
        """Each member's update for a selection whose every part (v7) is held, with the
        data of its later parts in order: the vectors that can be checked and summed."""
        out = {}
        for h, upd in self.update_ids.items():
            if upd.selection != selection:
                continue
            held = self.parts.get(h, {})
            if len(held) == len(upd.parts):
                out[upd.member] = (upd, tuple(held[i] for i in range(1, len(upd.parts) + 1)))
        return out

    def add_complete(self, comp: Complete, now_ms: int) -> bool:
        if comp.selection in self.completes:
            return False
        self.completes[comp.selection] = comp
        self.complete_ms[comp.selection] = now_ms
        return True

    def add_share(self, s: SeedShare) -> bool:
        """One share per revealer, owner and selection."""
        return _first(self.shares.setdefault(s.selection, {}), s.owner, s.member, s)

    def recovering(self, owner: bytes) -> set[bytes]:
        """The selections whose shares of `owner`'s self seed are public (any of them)."""
        return {h for h, by_owner in self.shares.items() if by_owner.get(owner)}

    def add_unmask(self, um: Unmask) -> bool:
        return _first(self.unmasks, um.selection, um.member, um)

    def add_dispute(self, d: Dispute) -> bool:
        if d.selection in self.disputes:
            return False
        self.disputes[d.selection] = d
        return True

    def add_reveal(self, r: PairReveal) -> bool:
        """One reveal settles a pair: the shared point is the same from either side."""
        return _first(self.reveals, r.selection, secagg.pair_id(r.member, r.partner), r)


M = TypeVar("M", MaskedUpdate, Unmask, PairReveal, SeedShare)


def _first(table: dict[bytes, dict[bytes, M]], selection: bytes, who: bytes, msg: M) -> bool:
    """Keep the first message for a selection from a member (or about a pair)."""
    held = table.setdefault(selection, {})
    if who in held:
        return False
    held[who] = msg
    return True


def verdict(added: bool) -> Verdict:
    return Verdict.ACCEPT if added else Verdict.IGNORE
