"""What a node holds of a round's aggregation (protocol v2), and the round topic's
checks of its messages (consensus.secagg).

Every message is signed by the one who may send it and bounded per round: at most
MAX_ATTEMPTS selections per proposer, one update and one unmask per member and
selection, one Complete and one Dispute per selection, one PairReveal per disputed
pair. Anything that refers to a selection this
node has not seen is ignored, not rejected (gossip may reorder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from consensus import rules, secagg
from consensus.errors import InvalidError
from consensus.secagg import (
    FIELD_BYTES,
    MAX_ATTEMPTS,
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    Selection,
    Unmask,
)
from consensus.types import Genesis
from p2p import Verdict


@dataclass
class AggState:
    selections: dict[bytes, Selection] = field(default_factory=dict)  # by hash
    updates: dict[bytes, dict[bytes, MaskedUpdate]] = field(default_factory=dict)  # sel -> member
    completes: dict[bytes, Complete] = field(default_factory=dict)  # by selection
    unmasks: dict[bytes, dict[bytes, Unmask]] = field(default_factory=dict)  # sel -> member
    disputes: dict[bytes, Dispute] = field(default_factory=dict)  # by selection
    reveals: dict[bytes, dict[bytes, PairReveal]] = field(default_factory=dict)  # sel -> pair
    answered: set[bytes] = field(default_factory=set)  # selections we sent our update for
    unmasked: bytes | None = None  # the one selection we revealed our self mask for
    revealed_with: set[bytes] = field(default_factory=set)  # partners whose shared point is out

    def add_selection(self, sel: Selection) -> bool:
        h = sel.hash()
        if h in self.selections:
            return False
        by_proposer = sum(1 for s in self.selections.values() if s.proposer == sel.proposer)
        if by_proposer >= MAX_ATTEMPTS:
            return False
        self.selections[h] = sel
        return True

    def add_update(self, upd: MaskedUpdate) -> bool:
        return _first(self.updates, upd.selection, upd.member, upd)

    def add_complete(self, comp: Complete) -> bool:
        if comp.selection in self.completes:
            return False
        self.completes[comp.selection] = comp
        return True

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


M = TypeVar("M", MaskedUpdate, Unmask, PairReveal)


def _first(table: dict[bytes, dict[bytes, M]], selection: bytes, who: bytes, msg: M) -> bool:
    """Keep the first message for a selection from a member (or about a pair)."""
    held = table.setdefault(selection, {})
    if who in held:
        return False
    held[who] = msg
    return True


def check_selection(
    genesis: Genesis, cid: bytes, sel: Selection, participants: frozenset[bytes]
) -> None:
    """`participants`: the set of the selection's round on top of its parent."""
    if sel.proposer not in participants:
        raise InvalidError("Selection: the proposer is not a participant")
    if any(m not in participants for m in sel.members):
        raise InvalidError("Selection: a member is not a participant")
    if len(sel.members) < genesis.rule.min_members:
        raise InvalidError(
            f"Selection: {len(sel.members)} members, the rule needs {genesis.rule.min_members}"
        )
    rules.check_signature(sel, sel.proposer, cid)


def check_update(genesis: Genesis, cid: bytes, sel: Selection, upd: MaskedUpdate) -> None:
    if upd.member not in sel.members:
        raise InvalidError("MaskedUpdate: the sender is not a member of the selection")
    want = FIELD_BYTES * genesis.aggregation.parameters
    if len(upd.vector) != want:
        raise InvalidError(f"MaskedUpdate: the vector is {len(upd.vector)} bytes, not {want}")
    if len(upd.pair_commitments) != len(sel.members) - 1:
        raise InvalidError("MaskedUpdate: one pairwise-mask commitment per other member")
    rules.check_signature(upd, upd.member, cid)


def check_complete(cid: bytes, sel: Selection, comp: Complete) -> None:
    if len(comp.updates) != len(sel.members):
        raise InvalidError("Complete: one update hash per member")
    rules.check_signature(comp, sel.proposer, cid)


def check_unmask(cid: bytes, sel: Selection, um: Unmask) -> None:
    if um.member not in sel.members:
        raise InvalidError("Unmask: the sender is not a member of the selection")
    rules.check_signature(um, um.member, cid)


def check_dispute(cid: bytes, sel: Selection, d: Dispute) -> None:
    for pid in d.pairs:
        a, b = secagg.pair_of(pid)
        if not (a < b and a in sel.members and b in sel.members):
            raise InvalidError("Dispute: a pair is not two members of the selection, in order")
    rules.check_signature(d, sel.proposer, cid)


def check_reveal(cid: bytes, d: Dispute, r: PairReveal, mask_keys: dict[bytes, bytes]) -> None:
    """`mask_keys`: the members' mask public keys from their commits."""
    if secagg.pair_id(r.member, r.partner) not in d.pairs:
        raise InvalidError("PairReveal: the dispute names no such pair")
    rules.check_signature(r, r.member, cid)
    if not secagg.reveal_holds(r, mask_keys[r.member], mask_keys[r.partner]):
        raise InvalidError("PairReveal: the shared point's proof does not hold")


def verdict(added: bool) -> Verdict:
    return Verdict.ACCEPT if added else Verdict.IGNORE
