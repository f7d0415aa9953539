"""Evidence of misbehaviour on chain (protocol v5, docs/protocol.md §14).

(A little over 300 lines: each kind's rule is stated next to the others, so what makes
a piece proof can be read in one place.)

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

Three kinds are proven by an expensive check (a multi-scalar multiplication over the
circuit's basis) that `offence` names and the shell answers, as a block's other checks
(consensus.checks); the offence stands only if the answer is not the innocent one:
- BAD_UPDATE: a Selection, the member's CommitTx (listed in it), its weight commitment C
  (raw: it opens the commit's binding), its MaskedUpdate and (v7) the data of the
  update's later vector parts in order, whose whole vector is not C's model plus the
  masks it committed (`UpdateHolds` answers False).
- BAD_SELF_MASK: a Selection, a member's MaskedUpdate and a seed (raw 32 bytes) that its
  sharing commits to (seed G = F_0: unmasked or recovered, so public), whose mask is not
  the self-mask commitment (`MaskOf(seed)` differs from it).
- FALSE_PAIR: a Selection, the accused member's MaskedUpdate, a PairReveal of its pair
  with a partner, and both members' CommitTxs (listed in it, for their mask keys): the
  revealed shared point's mask is not what the accused committed for the pair.
An honest member cannot be named by these either: it answers only a Selection whose
every listed commit it holds, one per participant (node.aggmember), so the commits a
piece must quote are the ones it used.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from consensus import aggcheck, rules, secagg
from consensus.checks import Answer, Answers, Check, MaskOf, UpdateHolds
from consensus.encoding import Signed
from consensus.errors import ConsensusError, InvalidError
from consensus.membership import Roster
from consensus.secagg import MaskedUpdate, PairReveal, SeedShare, Selection, Unmask, VectorPart
from consensus.types import (
    BAD_MASK_KEY,
    BAD_SELF_MASK,
    BAD_UNMASK,
    BAD_UPDATE,
    EQUIVOCATION,
    FALSE_PAIR,
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
    BAD_UPDATE: "masked vector that is not its committed model and masks",
    BAD_SELF_MASK: "self-mask commitment that its seed does not open",
    FALSE_PAIR: "false pairwise-mask commitment",
}


@dataclass(frozen=True)
class Offence:
    """Who broke a rule in which round; for the expensive kinds, the check that decides
    it and the answer that would refute it (the offence stands on any other answer)."""

    key: bytes
    round: int
    check: Check | None = None
    innocent: Answer | None = None


def offence(genesis: Genesis, chain_id: bytes, ev: Evidence) -> Offence:
    """What the evidence proves, up to its expensive check; InvalidError if the messages
    prove nothing (malformed, unsigned, or consistent)."""
    try:
        return _offence(genesis, chain_id, ev)
    except ConsensusError as exc:
        raise InvalidError(f"Evidence ({KIND_NAMES.get(ev.kind, ev.kind)}): {exc}") from None


def confirm(off: Offence, answers: Answers) -> None:
    """InvalidError unless the offence's expensive check (if any) was answered, and not
    with the answer that shows its key innocent."""
    if off.check is None:
        return
    if off.check not in answers:
        raise InvalidError("Evidence: its check was not answered")
    if answers[off.check] == off.innocent:
        raise InvalidError("Evidence: its check shows the accused kept the rule")


def _offence(genesis: Genesis, chain_id: bytes, ev: Evidence) -> Offence:
    m = ev.messages
    if ev.kind in (BAD_UPDATE, BAD_SELF_MASK, FALSE_PAIR):
        return _checked_offence(genesis, chain_id, ev)
    if ev.kind == BAD_MASK_KEY:
        _count(m, 1)
        commit = CommitTx.decode(m[0])
        rules.check_signature(commit, commit.participant, chain_id)
        try:
            rules.check_mask_key(genesis, commit)
        except InvalidError:
            return Offence(commit.participant, commit.round)
        raise InvalidError("the commit's mask key is valid")
    if ev.kind == EQUIVOCATION and len(m) == 2:
        a, b = Selection.decode(m[0]), Selection.decode(m[1])
        if (a.round, a.proposer, a.attempt) != (b.round, b.proposer, b.attempt) or a == b:
            raise InvalidError("not two different Selections of one proposer and attempt")
        _signed_by(chain_id, a.proposer, a, b)
        return Offence(a.proposer, a.round)
    _count(m, 3)
    sel = Selection.decode(m[0])
    h = sel.hash()
    if ev.kind == EQUIVOCATION:
        return _equivocation(chain_id, sel, m[1], m[2])
    if ev.kind == FALSE_SHARE:
        upd, share = MaskedUpdate.decode(m[1]), SeedShare.decode(m[2])
        if upd.selection != h or share.selection != h or share.update != upd.hash():
            raise InvalidError("the update and the share are not of one selection")
        if share.owner != upd.member or share.member == share.owner:
            raise InvalidError("the share is not of the update's member, or is its own")
        if share.member not in sel.members or share.owner not in sel.members:
            raise InvalidError("the revealer and the owner are not members of the selection")
        _signed_by(chain_id, upd.member, upd)
        _signed_by(chain_id, share.member, share)
        if secagg.share_holds(upd, sel.members, share.member, int.from_bytes(share.share, "big")):
            raise InvalidError("the share opens the owner's commitments")
        return Offence(share.member, sel.round)
    if ev.kind == BAD_UNMASK:
        upd, um = MaskedUpdate.decode(m[1]), Unmask.decode(m[2])
        if upd.selection != h or um.selection != h or um.member != upd.member:
            raise InvalidError("the update and the Unmask are not one member's for one selection")
        _signed_by(chain_id, upd.member, upd, um)
        if aggcheck.unmask_opens(upd, um):
            raise InvalidError("the seed is the one the sharing commits to")
        return Offence(um.member, sel.round)
    raise InvalidError(f"unknown kind {ev.kind}")


def _checked_offence(genesis: Genesis, chain_id: bytes, ev: Evidence) -> Offence:
    m = ev.messages
    head = {BAD_UPDATE: 4, BAD_SELF_MASK: 3, FALSE_PAIR: 5}[ev.kind]
    if len(m) < head:
        _count(m, head)
    sel = Selection.decode(m[0])
    upd = MaskedUpdate.decode(m[1] if ev.kind != BAD_UPDATE else m[3])
    if upd.selection != sel.hash():
        raise InvalidError("the update is not for the selection")
    aggcheck.check_update(genesis, chain_id, sel, upd)  # well formed, a member's, signed
    # v7: BAD_UPDATE quotes the later parts of the vector too, in order
    _count(m, head + (len(upd.parts) if ev.kind == BAD_UPDATE else 0))
    if ev.kind == BAD_UPDATE:
        commit, c = CommitTx.decode(m[1]), m[2]
        rest = m[head:]
        for i, data in enumerate(rest, start=1):  # each the part the update signed
            aggcheck.check_part(genesis, upd, VectorPart(upd.selection, upd.hash(), i, data))
        _listed(chain_id, sel, commit, upd.member)
        if rules.commit_binding(chain_id, commit.participant, commit.round, commit.parent, c) != (
            commit.binding
        ):
            raise InvalidError("the commitment does not open the commit's binding")
        signs = secagg.pair_signs(sel.members, upd.member)
        check = UpdateHolds(c, 1, upd.encode(), signs, tuple(rest))
        return Offence(upd.member, sel.round, check, True)
    if ev.kind == BAD_SELF_MASK:
        seed = m[2]
        if len(seed) != secagg.FIELD_BYTES or not aggcheck.seed_opens(upd, seed):
            raise InvalidError("the seed is not the secret the update's sharing commits to")
        return Offence(upd.member, sel.round, MaskOf(seed), upd.self_commitment)
    reveal = PairReveal.decode(m[2])
    pair = {reveal.member, reveal.partner}
    if reveal.selection != sel.hash() or upd.member not in pair or not pair <= set(sel.members):
        raise InvalidError("the reveal is not of the accused member's pair in the selection")
    rules.check_signature(reveal, reveal.member, chain_id)
    keys = {}
    for raw in m[3:]:
        commit = CommitTx.decode(raw)
        if commit.participant not in pair:
            raise InvalidError("a commit is not of the pair's members")
        _listed(chain_id, sel, commit, commit.participant)
        keys[commit.participant] = commit.mask_key
    if len(keys) != 2:
        raise InvalidError("quotes the commits of the pair's two members")
    if not secagg.reveal_holds(reveal, keys[reveal.member], keys[reveal.partner]):
        raise InvalidError("the reveal's proof does not hold")
    partner = reveal.partner if upd.member == reveal.member else reveal.member
    committed = secagg.pair_commitment({upd.member: upd}, sel.members, upd.member, partner)
    return Offence(upd.member, sel.round, MaskOf(secagg.true_pair_seed(reveal)), committed)


def _listed(chain_id: bytes, sel: Selection, commit: CommitTx, member: bytes) -> None:
    """`commit` is the member's commit the selection lists, for its round and parent."""
    if commit.participant != member or commit.hash() not in sel.proofs:
        raise InvalidError("a quoted commit is not the member's commit the selection lists")
    if (commit.round, commit.parent) != (sel.round, sel.parent):
        raise InvalidError("a quoted commit is of another round or parent")
    rules.check_signature(commit, member, chain_id)


def _equivocation(chain_id: bytes, sel: Selection, x: bytes, y: bytes) -> Offence:
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
    _signed_by(chain_id, a.member, a, b)
    return Offence(a.member, sel.round)


def _count(messages: Sequence[bytes], n: int) -> None:
    if len(messages) != n:
        raise InvalidError(f"quotes {len(messages)} messages, this kind quotes {n}")


def _signed_by(chain_id: bytes, key: bytes, *msgs: Signed) -> None:
    for msg in msgs:
        rules.check_signature(msg, key, chain_id)


def apply(
    genesis: Genesis,
    chain_id: bytes,
    roster: Roster,
    block_round: int,
    evidence: Sequence[Evidence],
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
        off = offence(genesis, chain_id, ev)  # its expensive check is the block's (on_block)
        key, rnd = off.key, off.round
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


def bad_update(
    sel: Selection,
    commit: CommitTx,
    commitment: bytes,
    upd: MaskedUpdate,
    rest: Sequence[bytes] = (),
) -> Evidence:
    """`rest`: the data of the update's later parts (v7), in order."""
    return Evidence(BAD_UPDATE, (sel.encode(), commit.encode(), commitment, upd.encode(), *rest))


def bad_self_mask(sel: Selection, upd: MaskedUpdate, seed: bytes) -> Evidence:
    return Evidence(BAD_SELF_MASK, (sel.encode(), upd.encode(), seed))


def false_pair(
    sel: Selection, upd: MaskedUpdate, reveal: PairReveal, commits: Sequence[CommitTx]
) -> Evidence:
    """`commits`: the pair's two members' commits the selection lists."""
    return Evidence(
        FALSE_PAIR, (sel.encode(), upd.encode(), reveal.encode(), *(c.encode() for c in commits))
    )
