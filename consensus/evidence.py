"""Evidence of misbehaviour on chain (protocol v5, docs/protocol.md §14).

A participant that breaks a rule provably — its own signed messages contradict each
other or a check anyone can run — can be named in a block, and is then left out of
every selection for `genesis.rule.exclusion_rounds` rounds (chain state, folded into
the roster like membership changes). Each kind quotes the signed messages that prove
it, so checking evidence needs nothing but them and the chain id: an honest
participant can never be named, because each kind needs a message only a rule-breaker
signs. Silence is not provable and is not evidence: dropout recovery makes it cost only
the silent member's own contribution.

Kinds (messages quoted, in order):
- EQUIVOCATION: two Selections of one proposer, round and attempt; or a Selection and
  two Unmasks of one member, or two SeedShares of one revealer and owner, for it.
- FALSE_SHARE: a Selection, the owner's MaskedUpdate and a SeedShare opened from that
  update (its hash is in the share) that fails Feldman's check.
- BAD_UNMASK: a Selection, a member's MaskedUpdate and its Unmask whose seed is not the
  secret the update's sharing commits to (seed G != F_0).
- BAD_MASK_KEY: a CommitTx whose mask key is not a valid point under an aggregating rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from consensus import aggcheck, rules, secagg
from consensus.encoding import Signed
from consensus.errors import ConsensusError, InvalidError
from consensus.membership import Roster
from consensus.secagg import MaskedUpdate, SeedShare, Selection, Unmask
from consensus.types import (
    BAD_MASK_KEY,
    BAD_UNMASK,
    EQUIVOCATION,
    FALSE_SHARE,
    MAX_EVIDENCE_BYTES,
    CommitTx,
    Evidence,
    Genesis,
)

KIND_NAMES = {
    EQUIVOCATION: "equivocation",
    FALSE_SHARE: "false seed share",
    BAD_UNMASK: "unmasked seed that its sharing does not commit to",
    BAD_MASK_KEY: "mask key that is no point",
}


def offence(genesis: Genesis, cid: bytes, ev: Evidence) -> tuple[bytes, int]:
    """(the key the evidence proves broke a rule, the round it did); InvalidError if the
    messages prove nothing (malformed, unsigned, or consistent)."""
    try:
        return _offence(genesis, cid, ev)
    except ConsensusError as exc:
        raise InvalidError(f"Evidence ({KIND_NAMES.get(ev.kind, ev.kind)}): {exc}") from None


def _offence(genesis: Genesis, cid: bytes, ev: Evidence) -> tuple[bytes, int]:
    m = ev.messages
    if ev.kind == BAD_MASK_KEY:
        _count(m, 1)
        commit = CommitTx.decode(m[0])
        rules.check_signature(commit, commit.participant, cid)
        try:
            rules.check_mask_key(genesis, commit)
        except InvalidError:
            return commit.participant, commit.round
        raise InvalidError("the commit's mask key is valid")
    if ev.kind == EQUIVOCATION and len(m) == 2:
        a, b = Selection.decode(m[0]), Selection.decode(m[1])
        if (a.round, a.proposer, a.attempt) != (b.round, b.proposer, b.attempt) or a == b:
            raise InvalidError("not two different Selections of one proposer and attempt")
        _signed_by(cid, a.proposer, a, b)
        return a.proposer, a.round
    _count(m, 3)
    sel = Selection.decode(m[0])
    h = sel.hash()
    if ev.kind == EQUIVOCATION:
        return _equivocation(cid, sel, m[1], m[2])
    if ev.kind == FALSE_SHARE:
        upd, share = MaskedUpdate.decode(m[1]), SeedShare.decode(m[2])
        if upd.selection != h or share.selection != h or share.update != upd.hash():
            raise InvalidError("the update and the share are not of one selection")
        if share.owner != upd.member or share.member == share.owner:
            raise InvalidError("the share is not of the update's member, or is its own")
        if share.member not in sel.members or share.owner not in sel.members:
            raise InvalidError("the revealer and the owner are not members of the selection")
        _signed_by(cid, upd.member, upd)
        _signed_by(cid, share.member, share)
        if secagg.share_holds(upd, sel.members, share.member, int.from_bytes(share.share, "big")):
            raise InvalidError("the share opens the owner's commitments")
        return share.member, sel.round
    if ev.kind == BAD_UNMASK:
        upd, um = MaskedUpdate.decode(m[1]), Unmask.decode(m[2])
        if upd.selection != h or um.selection != h or um.member != upd.member:
            raise InvalidError("the update and the Unmask are not one member's for one selection")
        _signed_by(cid, upd.member, upd, um)
        if aggcheck.unmask_opens(upd, um):
            raise InvalidError("the seed is the one the sharing commits to")
        return um.member, sel.round
    raise InvalidError(f"unknown kind {ev.kind}")


def _equivocation(cid: bytes, sel: Selection, x: bytes, y: bytes) -> tuple[bytes, int]:
    h = sel.hash()
    a: Unmask | SeedShare
    b: Unmask | SeedShare
    slot_a: tuple[bytes, ...]
    slot_b: tuple[bytes, ...]
    try:
        a, b = Unmask.decode(x), Unmask.decode(y)
        slot_a, slot_b = (a.selection, a.member), (b.selection, b.member)
    except ConsensusError:
        a, b = SeedShare.decode(x), SeedShare.decode(y)
        slot_a = (a.selection, a.member, a.owner)
        slot_b = (b.selection, b.member, b.owner)
    if slot_a != slot_b or a.selection != h or a == b:
        raise InvalidError("not two different messages of one member for one selection")
    _signed_by(cid, a.member, a, b)
    return a.member, sel.round


def _count(messages: Sequence[bytes], n: int) -> None:
    if len(messages) != n:
        raise InvalidError(f"quotes {len(messages)} messages, this kind quotes {n}")


def _signed_by(cid: bytes, key: bytes, *msgs: Signed) -> None:
    for msg in msgs:
        rules.check_signature(msg, key, cid)


def apply(
    genesis: Genesis, cid: bytes, roster: Roster, block_round: int, evidence: Sequence[Evidence]
) -> Roster:
    """The roster after a block of round `block_round` that carries `evidence`: each
    offender excluded from selection for rounds block_round+1 .. block_round+E. Evidence
    must be sorted by hash, name each offender once, name a key the roster has held,
    one not excluded already, for an offence at most E rounds old (so it cannot be used
    again once its exclusion ends); InvalidError at the first that is not."""
    if not evidence:
        return roster
    e = genesis.rule.exclusion_rounds
    if e == 0:
        raise InvalidError("Block: this chain carries no evidence (exclusion_rounds is 0)")
    if sum(len(ev.encode()) for ev in evidence) > MAX_EVIDENCE_BYTES:
        raise InvalidError(f"Block: its evidence exceeds {MAX_EVIDENCE_BYTES} bytes")
    hashes = [ev.hash() for ev in evidence]
    if any(a >= b for a, b in itertools.pairwise(hashes)):
        raise InvalidError("Block: evidence must be sorted by hash, without duplicates")
    known = {t.key for t in roster.tenures}
    excluded = {k: until for k, until in roster.excluded if until > block_round + 1}
    for ev in evidence:
        key, rnd = offence(genesis, cid, ev)
        if key not in known:
            raise InvalidError("Block: evidence names a key that was never a participant")
        if key in excluded:
            raise InvalidError("Block: evidence names a participant excluded already")
        if not block_round - e <= rnd <= block_round:
            raise InvalidError(
                f"Block: evidence of round {rnd} is outside rounds {block_round - e}..{block_round}"
            )
        excluded[key] = block_round + 1 + e
    return replace(roster, excluded=tuple(sorted(excluded.items())))


# ---------------------------------------------------------------- building evidence


def equivocation(context: Selection | None, first: Signed, second: Signed) -> Evidence:
    """Two messages where one is allowed: Selections quote no context; Unmasks and
    SeedShares quote their Selection first."""
    head = () if context is None else (context.encode(),)
    return Evidence(EQUIVOCATION, (*head, first.encode(), second.encode()))


def false_share(sel: Selection, owner_update: MaskedUpdate, share: SeedShare) -> Evidence:
    return Evidence(FALSE_SHARE, (sel.encode(), owner_update.encode(), share.encode()))


def bad_unmask(sel: Selection, update: MaskedUpdate, um: Unmask) -> Evidence:
    return Evidence(BAD_UNMASK, (sel.encode(), update.encode(), um.encode()))


def bad_mask_key(commit: CommitTx) -> Evidence:
    return Evidence(BAD_MASK_KEY, (commit.encode(),))
