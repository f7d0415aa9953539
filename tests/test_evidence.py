"""Evidence of misbehaviour (consensus.evidence), pure: every kind proves its offender
and a forged or consistent one proves nothing; a block's evidence excludes its
offenders from selection for exclusion_rounds rounds, once, and only while recent; a
block carrying evidence that proves nothing is invalid."""

from __future__ import annotations

import dataclasses

import pytest

from consensus import blocks, bn254, evidence, masking, rules, secagg
from consensus.checks import Answer, Check, MaskOf, UpdateHolds, VerifyProof
from consensus.crypto import sha256
from consensus.errors import InvalidError
from consensus.membership import genesis_roster
from consensus.rules import sign
from consensus.secagg import MaskedUpdate, SeedShare, Selection, Unmask
from consensus.strategy import BestShare
from consensus.types import BAD_UNMASK, MAX_EVIDENCE_MESSAGES, CommitTx, Evidence, ProofTx
from p2p.topics import MAX_GOSSIP_PAYLOAD
from prover.client import CheckUpdate, MaskCommitment, MaskVector
from support.chainfactory import Chain, make_chain
from support.fakes import (
    FAKE_PARAMS,
    FakeProver,
    aggregating,
    fake_commitment,
    fake_linear,
    fake_model,
)

N = 4  # parameters of the updates here


@pytest.fixture
def chain() -> Chain:
    base = make_chain(n=4)
    return Chain(base.participants, base.publisher, aggregating(base.genesis), base.batches)


def _named(chain: Chain, ev: Evidence) -> tuple[bytes, int]:
    off = evidence.offence(chain.genesis, chain.chain_id, ev)
    return off.key, off.round


def _selection(chain: Chain, attempt: int = 0, proofs: bytes = b"\x01" * 32) -> Selection:
    members = tuple(sorted(p.public for p in chain.participants[:3]))
    proposer = chain.participants[0]
    sel = Selection(3, chain.chain_id, proposer.public, attempt, (proofs,), members, bytes(64))
    return sign(sel, proposer, chain.chain_id)


def _updates(chain: Chain, sel: Selection) -> tuple[dict[bytes, MaskedUpdate], dict[bytes, int]]:
    secrets = {m: secagg.mask_secret(bytes([i + 1]) * 32) for i, m in enumerate(sel.members)}
    keys = {m: secagg.mask_public(s) for m, s in secrets.items()}
    out = {}
    for m in sel.members:
        others = [(o, keys[o]) for o in secagg.others_of(sel.members, m)]
        t = secagg.threshold(3, len(sel.members))
        masks = secagg.member_masks(secrets[m], m, others, sel.hash(), N, t)
        unsigned = secagg.unsigned_update(sel.hash(), m, bytes(32 * N), (), bytes(32), masks)
        out[m] = sign(unsigned, chain.key_of(m), chain.chain_id)
    return out, secrets


def _share(chain: Chain, sel: Selection, upd: MaskedUpdate, holder: bytes, value: int) -> SeedShare:
    unsigned = SeedShare(
        sel.hash(), holder, upd.member, upd.hash(), value.to_bytes(32, "big"), bytes(64)
    )
    return sign(unsigned, chain.key_of(holder), chain.chain_id)


def _true_share(
    sel: Selection,
    updates: dict[bytes, MaskedUpdate],
    secrets: dict[bytes, int],
    owner: bytes,
    holder: bytes,
) -> int:
    upd = updates[owner]
    sealed = upd.seed_shares[secagg.others_of(sel.members, owner).index(holder)]
    public = secagg.mask_public(secrets[owner])
    return secagg.open_share(secrets[holder], holder, owner, public, sel.hash(), sealed)


def test_two_selections_of_one_attempt_prove_their_proposer(chain: Chain) -> None:
    a, b = _selection(chain), _selection(chain, proofs=b"\x02" * 32)
    ev = evidence.equivocation(None, a, b)
    assert _named(chain, ev) == (a.proposer, 3)
    for x, y in ((a, a), (a, _selection(chain, attempt=1))):  # the same, or two attempts
        with pytest.raises(InvalidError, match="not two different Selections"):
            evidence.offence(chain.genesis, chain.chain_id, evidence.equivocation(None, x, y))
    forged = dataclasses.replace(b, signature=bytes(64))
    with pytest.raises(InvalidError, match="signature"):
        evidence.offence(chain.genesis, chain.chain_id, evidence.equivocation(None, a, forged))


def test_two_unmasks_or_two_shares_of_one_slot_prove_their_sender(chain: Chain) -> None:
    sel = _selection(chain)
    m = sel.members[1]
    u1 = sign(Unmask(sel.hash(), m, b"\x01" * 32, bytes(64)), chain.key_of(m), chain.chain_id)
    u2 = sign(Unmask(sel.hash(), m, b"\x02" * 32, bytes(64)), chain.key_of(m), chain.chain_id)
    assert _named(chain, evidence.equivocation(sel, u1, u2)) == (m, 3)
    with pytest.raises(InvalidError, match="not two different"):
        evidence.offence(chain.genesis, chain.chain_id, evidence.equivocation(sel, u1, u1))
    other = _selection(chain, attempt=1)
    with pytest.raises(InvalidError, match="not two different"):  # not of the quoted selection
        evidence.offence(chain.genesis, chain.chain_id, evidence.equivocation(other, u1, u2))
    updates, _ = _updates(chain, sel)
    owner = sel.members[0]
    s1 = _share(chain, sel, updates[owner], m, 5)
    s2 = _share(chain, sel, updates[owner], m, 6)
    assert _named(chain, evidence.equivocation(sel, s1, s2)) == (m, 3)


def test_a_share_that_fails_its_owners_commitments_proves_its_revealer(chain: Chain) -> None:
    sel = _selection(chain)
    updates, secrets = _updates(chain, sel)
    owner, holder = sel.members[0], sel.members[2]
    value = _true_share(sel, updates, secrets, owner, holder)
    bad = evidence.false_share(
        sel, updates[owner], _share(chain, sel, updates[owner], holder, value + 1)
    )
    assert _named(chain, bad) == (holder, 3)
    good = evidence.false_share(
        sel, updates[owner], _share(chain, sel, updates[owner], holder, value)
    )
    with pytest.raises(InvalidError, match="opens the owner's commitments"):
        evidence.offence(chain.genesis, chain.chain_id, good)
    # a share opened from another update than the one quoted cannot frame its revealer
    other = updates[sel.members[1]]
    framed = evidence.false_share(sel, other, _share(chain, sel, updates[owner], holder, value))
    with pytest.raises(InvalidError, match="not of one selection"):
        evidence.offence(chain.genesis, chain.chain_id, framed)


def test_an_unmask_whose_seed_the_sharing_does_not_commit_to_proves_its_member(
    chain: Chain,
) -> None:
    sel = _selection(chain)
    updates, secrets = _updates(chain, sel)
    m = sel.members[1]
    key = chain.key_of(m)
    seed = masking.self_seed(secrets[m].to_bytes(32, "big"), sel.hash())
    wrong = sign(Unmask(sel.hash(), m, b"\x07" * 32, bytes(64)), key, chain.chain_id)
    ev = evidence.bad_unmask(sel, updates[m], wrong)
    assert _named(chain, ev) == (m, 3)
    right = sign(Unmask(sel.hash(), m, seed, bytes(64)), key, chain.chain_id)
    with pytest.raises(InvalidError, match="the one the sharing commits to"):
        evidence.offence(chain.genesis, chain.chain_id, evidence.bad_unmask(sel, updates[m], right))
    with pytest.raises(InvalidError, match="quotes 2 messages"):
        evidence.offence(chain.genesis, chain.chain_id, Evidence(BAD_UNMASK, ev.messages[:2]))


def test_a_commit_whose_mask_key_is_no_point_proves_its_participant(chain: Chain) -> None:
    p = chain.participants[1]
    c = CommitTx(
        2, chain.chain_id, p.public, b"\x05" * 32, mask_key=b"\x01" * 5, signature=bytes(64)
    )
    ev = evidence.bad_mask_key(sign(c, p, chain.chain_id))
    assert _named(chain, ev) == (p.public, 2)
    fine = dataclasses.replace(c, mask_key=secagg.mask_public(9))
    with pytest.raises(InvalidError, match="mask key is valid"):
        evidence.offence(
            chain.genesis, chain.chain_id, evidence.bad_mask_key(sign(fine, p, chain.chain_id))
        )


def _offender(chain: Chain) -> tuple[bytes, Evidence]:
    a, b = _selection(chain), _selection(chain, proofs=b"\x02" * 32)
    return a.proposer, evidence.equivocation(None, a, b)


def test_evidence_excludes_its_offender_for_the_genesis_rounds_once(chain: Chain) -> None:
    g = chain.genesis  # exclusion_rounds 4; the offence is of round 3
    key, ev = _offender(chain)
    roster = evidence.apply(g, chain.chain_id, genesis_roster(g), 5, [ev])
    assert [r for r in range(6, 12) if key in roster.excluded_at(r)] == [6, 7, 8, 9]
    with pytest.raises(InvalidError, match="excluded already"):
        evidence.apply(g, chain.chain_id, roster, 6, [ev])
    later = evidence.apply(g, chain.chain_id, roster, 7, [])  # nothing carried: nothing changes
    assert key in later.excluded_at(9)
    with pytest.raises(InvalidError, match="outside rounds 4"):  # too old to use again
        evidence.apply(g, chain.chain_id, genesis_roster(g), 8, [ev])
    with pytest.raises(InvalidError, match="outside rounds"):  # an offence of a later round
        evidence.apply(g, chain.chain_id, genesis_roster(g), 2, [ev])
    none = dataclasses.replace(g, rule=dataclasses.replace(g.rule, exclusion_rounds=0))
    with pytest.raises(InvalidError, match="carries no evidence"):
        evidence.apply(none, chain.chain_id, genesis_roster(none), 5, [ev])
    with pytest.raises(InvalidError, match="sorted by hash"):
        evidence.apply(g, chain.chain_id, genesis_roster(g), 5, [ev, ev])


def test_an_excluded_participant_is_never_selected(chain: Chain) -> None:
    rule = BestShare(chain.genesis)
    batch = chain.batches[0]
    proofs = [
        ProofTx(0, bytes([i]) * 32, p.public, bytes([i + 2]) * 32, 4 - i, b"", bytes(64))
        for i, p in enumerate(chain.participants)
    ]
    best = proofs[0].participant
    assert best in {c.participant for c in rule.select(batch, proofs, b"\x01" * 32)}
    chosen = rule.select(batch, proofs, b"\x01" * 32, frozenset({best}))
    assert best not in {c.participant for c in chosen} and len(chosen) == 3


def test_rules_refuse_a_block_with_evidence_that_proves_nothing(chain: Chain) -> None:
    """The block rule folds a block's evidence into the roster after it
    (consensus.blocks.roster_after, which on_block and the node's chain both use):
    consistent messages quoted as evidence make the block invalid."""
    block, _ = chain.round_block(4, chain.chain_id, 1, {0: 3, 1: 2, 2: 1})
    key, ev = _offender(chain)
    roster = genesis_roster(chain.genesis)
    after = blocks.roster_after(
        chain.genesis, chain.chain_id, roster, dataclasses.replace(block, evidence=(ev,))
    )
    assert key in after.excluded_at(5)
    a = _selection(chain)
    junk = dataclasses.replace(block, evidence=(evidence.equivocation(None, a, a),))
    with pytest.raises(InvalidError, match="not two different Selections"):
        blocks.roster_after(chain.genesis, chain.chain_id, roster, junk)


# ------------------------------------------- kinds proven by an expensive check (v5)


@dataclasses.dataclass
class _Round:
    """A selection of three members with real commits, fake-basis updates and secrets."""

    sel: Selection
    commits: dict[bytes, CommitTx]
    commitment: dict[bytes, bytes]
    updates: dict[bytes, MaskedUpdate]
    secrets: dict[bytes, int]


def _mask(chain: Chain, r: _Round, m: bytes, secret: int | None = None) -> MaskedUpdate:
    keys = {k: c.mask_key for k, c in r.commits.items()}
    others = tuple((o, keys[o]) for o in secagg.others_of(r.sel.members, m))
    t = secagg.threshold(chain.genesis.rule.min_members, len(r.sel.members))
    job = MaskVector("", "", _model(m), 1, secret or r.secrets[m], m, others, r.sel.hash(), t)
    return sign(FakeProver(aggregating=True).answer(job), chain.key_of(m), chain.chain_id)  # type: ignore[arg-type]


def _model(m: bytes) -> bytes:
    return fake_model(3, m)


def _round(chain: Chain) -> _Round:
    members = sorted(p.public for p in chain.participants[:3])
    secrets = {m: secagg.mask_secret(bytes([i + 9]) * 32) for i, m in enumerate(members)}
    commitment = {m: fake_commitment(_model(m)) for m in members}
    commits = {}
    for m in members:
        binding = rules.commit_binding(chain.chain_id, m, 3, chain.chain_id, commitment[m])
        c = CommitTx(
            3,
            chain.chain_id,
            m,
            binding,
            mask_key=secagg.mask_public(secrets[m]),
            signature=bytes(64),
        )
        commits[m] = sign(c, chain.key_of(m), chain.chain_id)
    proposer = chain.key_of(members[0])
    ids = tuple(sorted(c.hash() for c in commits.values()))
    sel = sign(
        Selection(3, chain.chain_id, proposer.public, 0, ids, tuple(members), bytes(64)),
        proposer,
        chain.chain_id,
    )
    r = _Round(sel, commits, commitment, {}, secrets)
    r.updates = {m: _mask(chain, r, m) for m in members}
    return r


def _answer(c: UpdateHolds | MaskOf) -> object:
    """The fake prover's arithmetic, as the checker's worker jobs would answer."""
    prover = FakeProver(aggregating=True)
    if isinstance(c, UpdateHolds):
        return prover.answer(
            CheckUpdate("", "", c.commitment, c.weight, c.update, c.signs, c.parts)
        )
    return prover.answer(MaskCommitment("", "", c.seed))


def _verdict(chain: Chain, ev: Evidence) -> tuple[bytes, int]:
    """The offence, once its check is answered; InvalidError if the answer refutes it."""
    off = evidence.offence(chain.genesis, chain.chain_id, ev)
    assert off.check is not None
    evidence.confirm(off, {off.check: _answer(off.check)})  # type: ignore[dict-item]
    return off.key, off.round


def test_a_vector_that_is_not_its_committed_model_proves_its_member(chain: Chain) -> None:
    r = _round(chain)
    m = r.sel.members[1]
    honest = evidence.bad_update(r.sel, r.commits[m], r.commitment[m], r.updates[m])
    with pytest.raises(InvalidError, match="kept the rule"):
        _verdict(chain, honest)
    y = secagg.decode_vector(r.updates[m].vector, FAKE_PARAMS)
    y[0] = (y[0] + 1) % bn254.R
    bad = dataclasses.replace(r.updates[m], vector=secagg.encode_vector(y))
    bad = sign(bad, chain.key_of(m), chain.chain_id)
    assert _verdict(chain, evidence.bad_update(r.sel, r.commits[m], r.commitment[m], bad)) == (m, 3)
    other = r.sel.members[2]
    with pytest.raises(InvalidError, match="does not open the commit's binding"):
        evidence.offence(
            chain.genesis,
            chain.chain_id,
            evidence.bad_update(r.sel, r.commits[m], r.commitment[other], bad),
        )
    with pytest.raises(InvalidError, match="not the member's commit the selection lists"):
        evidence.offence(
            chain.genesis,
            chain.chain_id,
            evidence.bad_update(r.sel, r.commits[other], r.commitment[m], bad),
        )
    with pytest.raises(InvalidError, match="check was not answered"):
        evidence.confirm(evidence.offence(chain.genesis, chain.chain_id, honest), {})


def test_a_self_mask_its_public_seed_does_not_open_proves_its_member(chain: Chain) -> None:
    r = _round(chain)
    m = r.sel.members[0]
    seed = masking.self_seed(r.secrets[m].to_bytes(32, "big"), r.sel.hash())
    with pytest.raises(InvalidError, match="kept the rule"):
        _verdict(chain, evidence.bad_self_mask(r.sel, r.updates[m], seed))
    fake = fake_linear(masking.expand(sha256(seed), FAKE_PARAMS))
    cheat = sign(
        dataclasses.replace(r.updates[m], self_commitment=bn254.compress(fake)),
        chain.key_of(m),
        chain.chain_id,
    )
    assert _verdict(chain, evidence.bad_self_mask(r.sel, cheat, seed)) == (m, 3)
    with pytest.raises(InvalidError, match="not the secret the update's sharing commits to"):
        evidence.offence(
            chain.genesis, chain.chain_id, evidence.bad_self_mask(r.sel, cheat, sha256(seed))
        )


def test_a_pair_commitment_a_reveal_shows_false_proves_its_member_only(chain: Chain) -> None:
    r = _round(chain)
    liar, partner, third = r.sel.members
    r.updates[liar] = _mask(chain, r, liar, secret=r.secrets[liar] + 1)  # another mask key
    reveal = secagg.reveal_pair(
        r.secrets[partner], partner, liar, r.commits[liar].mask_key, r.sel.hash()
    )
    reveal = sign(reveal, chain.key_of(partner), chain.chain_id)
    pair = [r.commits[liar], r.commits[partner]]
    assert _verdict(chain, evidence.false_pair(r.sel, r.updates[liar], reveal, pair)) == (liar, 3)
    with pytest.raises(InvalidError, match="kept the rule"):  # the honest partner: refuted
        _verdict(chain, evidence.false_pair(r.sel, r.updates[partner], reveal, pair))
    with pytest.raises(InvalidError, match="not of the accused member's pair"):
        evidence.offence(
            chain.genesis,
            chain.chain_id,
            evidence.false_pair(r.sel, r.updates[third], reveal, pair),
        )
    with pytest.raises(InvalidError, match="quotes the commits of the pair's two members"):
        evidence.offence(
            chain.genesis,
            chain.chain_id,
            evidence.false_pair(r.sel, r.updates[liar], reveal, [r.commits[liar]] * 2),
        )
    forged = dataclasses.replace(reveal, shared=r.commits[third].mask_key)
    forged = sign(forged, chain.key_of(partner), chain.chain_id)
    with pytest.raises(InvalidError, match="proof does not hold"):
        evidence.offence(
            chain.genesis, chain.chain_id, evidence.false_pair(r.sel, r.updates[liar], forged, pair)
        )


def test_a_block_whose_evidence_its_check_refutes_is_invalid(chain: Chain) -> None:
    """on_block names the evidence's check with the block's other expensive checks, and
    conclude refuses the block when its answer shows the accused kept the rule."""
    r = _round(chain)
    m = r.sel.members[1]
    honest = evidence.bad_update(r.sel, r.commits[m], r.commitment[m], r.updates[m])
    block, _ = chain.round_block(4, chain.chain_id, 1, {0: 3, 1: 2, 2: 1})
    block = sign(
        dataclasses.replace(block, evidence=(honest,)), chain.key_of(block.proposer), chain.chain_id
    )
    pending = blocks.on_block(
        chain.genesis, chain.chain_id, blocks.ParentInfo(chain.chain_id, -1, 0), block
    )
    (off,) = pending.offences
    assert off.check in pending.checks and off.key == m
    answers: dict[Check, Answer] = {c: True for c in pending.checks if isinstance(c, VerifyProof)}
    answers[off.check] = _answer(off.check)  # type: ignore[assignment]
    with pytest.raises(InvalidError, match="kept the rule"):
        blocks.conclude(pending, answers)


def test_a_wrong_vector_in_parts_is_quoted_whole_and_checked_whole(chain: Chain) -> None:
    """v7: evidence of a wrong vector sent in parts quotes the update and each later part
    in order; its check receives them all. A missing, extra or swapped part proves
    nothing. Such evidence is above one gossip message: its finder's block carries it."""
    r = _round(chain)
    m = r.sel.members[1]
    n = secagg.PART_LEN + 4000  # about mnist-mlp's: two parts
    g = dataclasses.replace(
        chain.genesis, aggregation=dataclasses.replace(chain.genesis.aggregation, parameters=n)
    )
    whole = secagg.encode_vector(list(range(n)))
    header, rest = secagg.split_update(dataclasses.replace(r.updates[m], vector=whole))
    upd = sign(header, chain.key_of(m), chain.chain_id)
    ev = evidence.bad_update(r.sel, r.commits[m], r.commitment[m], upd, rest)
    assert Evidence.decode(ev.encode()) == ev and len(ev.encode()) > MAX_GOSSIP_PAYLOAD
    off = evidence.offence(g, chain.chain_id, ev)
    assert (off.key, off.round) == (m, 3)
    assert isinstance(off.check, UpdateHolds) and off.check.parts == rest
    assert secagg.whole_vector(MaskedUpdate.decode(off.check.update), off.check.parts) == whole
    for bad, why in (
        (evidence.bad_update(r.sel, r.commits[m], r.commitment[m], upd), "quotes 4 messages"),
        (
            evidence.bad_update(r.sel, r.commits[m], r.commitment[m], upd, (*rest, rest[0])),
            "quotes 6 messages",
        ),
        (
            evidence.bad_update(r.sel, r.commits[m], r.commitment[m], upd, (rest[0][::-1],)),
            "not the part the member's update signed",
        ),
    ):
        with pytest.raises(InvalidError, match=why):
            evidence.offence(g, chain.chain_id, bad)


def test_evidence_may_quote_a_bad_update_of_the_largest_vector_whole() -> None:
    """types.MAX_EVIDENCE_MESSAGES is written out (types cannot import secagg): it must
    be BAD_UPDATE's four messages plus the later parts of a vector in MAX_PARTS parts."""
    assert MAX_EVIDENCE_MESSAGES == 4 + secagg.MAX_PARTS - 1
