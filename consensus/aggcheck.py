"""Validity of the aggregation round's messages (protocol v5, docs/protocol.md §10).

Each check is a pure function of the message and what the node already holds of its
selection; `InvalidError` means the sender broke a rule (reject and penalise), and a
`False` answer means the node lacks the context to judge yet (ignore: gossip may
reorder). What the messages mean is consensus.secagg's; which ones an honest node acts
on is consensus.aggpolicy's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from consensus import bn254, rules, secagg
from consensus.crypto import sha256
from consensus.errors import InvalidError
from consensus.secagg import (
    FIELD_BYTES,
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
    VectorPart,
)
from consensus.types import Genesis


def check_selection(
    genesis: Genesis, chain_id: bytes, sel: Selection, participants: Collection[bytes]
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
    rules.check_signature(sel, sel.proposer, chain_id)


def proposer_sealed(
    sel: Selection, sealed: Collection[bytes], committer: Mapping[bytes, bytes]
) -> bool:
    """Whether the selection lists a commit of its proposer that the round's reveal sealed
    (`sealed`: the reveal's commit ids; `committer`: commit id -> participant of the commits
    held). Only such a participant can make a block of the round, so only it may start a
    selection; its proof need not be verified here yet (the Selection often arrives while
    it still is: members wait for it before they answer)."""
    return any(c in sealed and committer.get(c) == sel.proposer for c in sel.proofs)


def check_update(genesis: Genesis, chain_id: bytes, sel: Selection, upd: MaskedUpdate) -> None:
    if upd.member not in sel.members:
        raise InvalidError("MaskedUpdate: the sender is not a member of the selection")
    n = genesis.aggregation.parameters
    want = secagg.part_bytes(n, 0)
    if len(upd.vector) != want:
        raise InvalidError(f"MaskedUpdate: the vector is {len(upd.vector)} bytes, not {want}")
    if len(upd.parts) != secagg.part_count(n) - 1:
        raise InvalidError(
            f"MaskedUpdate: {len(upd.parts)} further parts, a vector of {n} elements has "
            f"{secagg.part_count(n) - 1}"
        )
    if len(upd.pair_commitments) != len(sel.members) - 1:
        raise InvalidError("MaskedUpdate: one pairwise-mask commitment per other member")
    t = secagg.threshold(genesis.rule.min_members, len(sel.members))
    if len(upd.seed_commitments) != t:
        raise InvalidError(f"MaskedUpdate: {len(upd.seed_commitments)} seed commitments, not {t}")
    if len(upd.seed_shares) != len(sel.members) - 1:
        raise InvalidError("MaskedUpdate: one seed share per other member")
    for c in (*upd.seed_commitments, *upd.pair_commitments, upd.self_commitment):
        bn254.decompress(c)  # not a point: no check of it could hold, nor name its member
    secagg.decode_vector(upd.vector, len(upd.vector) // FIELD_BYTES)  # elements below R
    rules.check_signature(upd, upd.member, chain_id)


def check_part(genesis: Genesis, upd: MaskedUpdate, part: VectorPart) -> None:
    """A later part of a vector (v7) against its member's checked update: the data whose
    hash the update signed, of its size, elements below R."""
    if part.update != upd.hash() or part.selection != upd.selection:
        raise InvalidError("VectorPart: not a part of this update")
    if part.index > len(upd.parts):
        raise InvalidError(f"VectorPart: index {part.index}, the update has {len(upd.parts)}")
    want = secagg.part_bytes(genesis.aggregation.parameters, part.index)
    if len(part.data) != want:
        raise InvalidError(f"VectorPart: {len(part.data)} bytes, part {part.index} has {want}")
    if sha256(part.data) != upd.parts[part.index - 1]:
        raise InvalidError("VectorPart: its data is not the part the member's update signed")
    secagg.decode_vector(part.data, len(part.data) // FIELD_BYTES)


def check_complete(chain_id: bytes, sel: Selection, comp: Complete) -> None:
    if len(comp.updates) != len(sel.members):
        raise InvalidError("Complete: one update hash per member")
    rules.check_signature(comp, sel.proposer, chain_id)


def check_unmask(chain_id: bytes, sel: Selection, um: Unmask, upd: MaskedUpdate | None) -> None:
    """`upd`: the member's update for the selection, if held. Version 5: its seed must be
    the secret its update's seed sharing commits to (seed G = F_0), else a member could
    spoil the sum with a wrong seed that the others' shares would have replaced."""
    if um.member not in sel.members:
        raise InvalidError("Unmask: the sender is not a member of the selection")
    rules.check_signature(um, um.member, chain_id)
    if upd is not None and not unmask_opens(upd, um):
        raise InvalidError("Unmask: the seed is not the one its update's sharing commits to")


def unmask_opens(upd: MaskedUpdate, um: Unmask) -> bool:
    """seed G == F_0: the unmasked seed is the secret the member's shares are of."""
    return seed_opens(upd, um.seed)


def seed_opens(upd: MaskedUpdate, raw: bytes) -> bool:
    """seed G == F_0: `raw` is the secret the member's seed sharing commits to."""
    seed = int.from_bytes(raw, "big")
    if seed >= bn254.R or not upd.seed_commitments:
        return False
    try:
        f0 = bn254.decompress(upd.seed_commitments[0])
    except InvalidError:
        return False
    return bn254.mul(bn254.G, seed) == f0


def check_seed_share(
    chain_id: bytes, sel: Selection, comp: Complete, owner_update: MaskedUpdate, s: SeedShare
) -> None:
    """A share of the self seed of a member whose update the selection's Complete lists
    (`owner_update`), from another member, that opens against the owner's commitments.
    A share that does not is the revealer's lie (the owner's commitments are signed; a
    member whose own share was wrong could not reveal a valid one: it stays silent)."""
    if s.member not in sel.members or s.owner not in sel.members or s.member == s.owner:
        raise InvalidError("SeedShare: the revealer and the owner must be two members")
    if owner_update.hash() not in comp.updates or owner_update.member != s.owner:
        raise InvalidError("SeedShare: the owner's update is not in the selection's Complete")
    if s.update != owner_update.hash():
        raise InvalidError("SeedShare: opened from another update than the Complete lists")
    rules.check_signature(s, s.member, chain_id)
    value = int.from_bytes(s.share, "big")
    if not secagg.share_holds(owner_update, sel.members, s.member, value):
        raise InvalidError("SeedShare: the share does not open the owner's seed commitments")


def check_dispute(
    chain_id: bytes, sel: Selection, d: Dispute, updates: Mapping[bytes, MaskedUpdate]
) -> bool:
    """A Dispute may name only pairs whose two members' updates commit different points
    for their shared mask (`updates`: the selection's updates held, by member). False:
    an update it rests on is not here yet. A pair that agrees makes it invalid: a
    baseless Dispute would make honest members reveal pairwise secrets for nothing."""
    for pid in d.pairs:
        a, b = secagg.pair_of(pid)
        if not (a < b and a in sel.members and b in sel.members):
            raise InvalidError("Dispute: a pair is not two members of the selection, in order")
    rules.check_signature(d, sel.proposer, chain_id)
    for pid in d.pairs:
        a, b = secagg.pair_of(pid)
        if a not in updates or b not in updates:
            return False
        if secagg.pair_commitment(updates, sel.members, a, b) == secagg.pair_commitment(
            updates, sel.members, b, a
        ):
            raise InvalidError("Dispute: a named pair committed the same point (nothing to settle)")
    return True


def check_reveal(
    chain_id: bytes, d: Dispute, r: PairReveal, mask_keys: Mapping[bytes, bytes]
) -> None:
    """`mask_keys`: the members' mask public keys from their commits."""
    if secagg.pair_id(r.member, r.partner) not in d.pairs:
        raise InvalidError("PairReveal: the dispute names no such pair")
    rules.check_signature(r, r.member, chain_id)
    if not secagg.reveal_holds(r, mask_keys[r.member], mask_keys[r.partner]):
        raise InvalidError("PairReveal: the shared point's proof does not hold")
