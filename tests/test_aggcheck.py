"""The round topic's checks of aggregation messages (consensus.aggcheck), pure: who may
send each message, its bounds, that a Dispute names only pairs that really disagree,
and the pair dispute's reveal, whose Chaum-Pedersen proof is checked against the mask
keys the members published in their commits."""

from __future__ import annotations

import dataclasses
import random

import pytest

from consensus import aggcheck, bn254, secagg
from consensus.crypto import SigningKey
from consensus.errors import InvalidError
from consensus.rules import sign
from consensus.secagg import (
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
)
from node.aggstate import AggState
from p2p.topics import MAX_GOSSIP_PAYLOAD, TopicKind, decode_gossip
from support.chainfactory import Chain, make_chain


@pytest.fixture
def chain() -> Chain:
    return make_chain(n=4)


def _selection(chain: Chain, attempt: int = 0) -> Selection:
    members = tuple(sorted(p.public for p in chain.participants[:3]))
    proposer = chain.participants[0]
    sel = Selection(
        0, chain.chain_id, proposer.public, attempt, (b"\x01" * 32,), members, bytes(64)
    )
    return sign(sel, proposer, chain.chain_id)


def _secrets(sel: Selection) -> dict[bytes, int]:
    return {m: secagg.mask_secret(bytes([i + 1]) * 32) for i, m in enumerate(sel.members)}


def _keys(secrets: dict[bytes, int]) -> dict[bytes, bytes]:
    return {m: secagg.mask_public(s) for m, s in secrets.items()}


def _signer(chain: Chain, key: bytes) -> SigningKey:
    return next(p for p in chain.participants if p.public == key)


def test_a_selection_needs_participants_and_enough_members(chain: Chain) -> None:
    g = dataclasses.replace(
        chain.genesis, rule=dataclasses.replace(chain.genesis.rule, min_members=3)
    )
    sel = _selection(chain)
    everyone = frozenset(g.participants)
    aggcheck.check_selection(g, chain.chain_id, sel, everyone)
    with pytest.raises(InvalidError, match="a member is not a participant"):
        aggcheck.check_selection(g, chain.chain_id, sel, everyone - {sel.members[-1]})
    few = sign(
        dataclasses.replace(sel, members=sel.members[:2]), chain.participants[0], chain.chain_id
    )
    with pytest.raises(InvalidError, match="2 members, the rule needs 3"):
        aggcheck.check_selection(g, chain.chain_id, few, everyone)
    forged = dataclasses.replace(sel, attempt=1)
    with pytest.raises(InvalidError, match="bad signature"):
        aggcheck.check_selection(g, chain.chain_id, forged, everyone)


def test_one_selection_per_proposer_and_attempt(chain: Chain) -> None:
    st = AggState()
    for a in range(secagg.MAX_ATTEMPTS):
        assert st.add_selection(_selection(chain, a), 0)
    assert not st.add_selection(_selection(chain, 0), 0)  # a repeat
    # another list under an attempt number already used is an equivocation: ignored
    extra = dataclasses.replace(_selection(chain, 0), proofs=(b"\x02" * 32,))
    assert not st.add_selection(sign(extra, chain.participants[0], chain.chain_id), 0)


def test_a_selection_needs_its_proposers_sealed_commit(chain: Chain) -> None:
    sel = _selection(chain)
    listed = b"\x01" * 32
    assert aggcheck.proposer_sealed(sel, {listed}, {listed: sel.proposer})
    assert not aggcheck.proposer_sealed(sel, set(), {listed: sel.proposer})  # not sealed
    assert not aggcheck.proposer_sealed(sel, {listed}, {})  # its commit is not here (yet)
    assert not aggcheck.proposer_sealed(sel, {listed}, {listed: sel.members[1]})  # another's


def _updates(sel: Selection, lie: tuple[bytes, bytes] | None = None) -> dict[bytes, MaskedUpdate]:
    """Updates whose pair commitments agree, except `lie[0]`'s for its pair with `lie[1]`."""
    out = {}
    for m in sel.members:
        pairs = []
        for o in secagg.others_of(sel.members, m):
            point = secagg.mask_public(int.from_bytes(secagg.pair_id(m, o)[:8], "big") + 1)
            if lie == (m, o):
                point = secagg.mask_public(7)
            pairs.append(point)
        out[m] = MaskedUpdate(sel.hash(), m, bytes(32), tuple(pairs), bytes(32), (), (), bytes(64))
    return out


def test_a_dispute_is_the_proposers_and_names_pairs_that_disagree(chain: Chain) -> None:
    sel = _selection(chain)
    a, b, c = sel.members
    proposer = chain.participants[0]
    lied = _updates(sel, lie=(b, a))
    good = sign(Dispute(sel.hash(), (secagg.pair_id(a, b),), bytes(64)), proposer, chain.chain_id)
    assert aggcheck.check_dispute(chain.chain_id, sel, good, lied)
    # an update it names is not here yet: no verdict (gossip may reorder)
    assert not aggcheck.check_dispute(chain.chain_id, sel, good, {a: lied[a]})
    # a pair whose two updates commit the same point: baseless, refused
    with pytest.raises(InvalidError, match="committed the same point"):
        aggcheck.check_dispute(chain.chain_id, sel, good, _updates(sel))
    baseless = sign(
        Dispute(sel.hash(), (secagg.pair_id(a, c),), bytes(64)), proposer, chain.chain_id
    )
    with pytest.raises(InvalidError, match="committed the same point"):
        aggcheck.check_dispute(chain.chain_id, sel, baseless, lied)
    outsider = chain.participants[3].public
    stranger = sign(
        Dispute(sel.hash(), (secagg.pair_id(a, outsider),), bytes(64)), proposer, chain.chain_id
    )
    with pytest.raises(InvalidError, match="not two members"):
        aggcheck.check_dispute(chain.chain_id, sel, stranger, lied)
    backwards = sign(Dispute(sel.hash(), (b + a,), bytes(64)), proposer, chain.chain_id)
    with pytest.raises(InvalidError, match="in order"):
        aggcheck.check_dispute(chain.chain_id, sel, backwards, lied)
    by_member = sign(
        Dispute(sel.hash(), (secagg.pair_id(a, b),), bytes(64)), _signer(chain, c), chain.chain_id
    )
    with pytest.raises(InvalidError, match="bad signature"):
        aggcheck.check_dispute(chain.chain_id, sel, by_member, lied)
    st = AggState()
    assert st.add_dispute(good) and not st.add_dispute(good)


def test_a_pair_reveal_must_prove_the_pairs_shared_point(chain: Chain) -> None:
    sel = _selection(chain)
    a, b, c = sel.members
    secrets = _secrets(sel)
    keys = _keys(secrets)
    proposer = chain.participants[0]
    dispute = sign(
        Dispute(sel.hash(), (secagg.pair_id(a, b),), bytes(64)), proposer, chain.chain_id
    )

    def reveal(member: bytes, partner: bytes, secret: int) -> PairReveal:
        unsigned = secagg.reveal_pair(secret, member, partner, keys[partner], sel.hash())
        return sign(unsigned, _signer(chain, member), chain.chain_id)

    good = reveal(b, a, secrets[b])
    aggcheck.check_reveal(chain.chain_id, dispute, good, keys)
    # the other member reveals the same point: either settles the pair, once
    other = reveal(a, b, secrets[a])
    aggcheck.check_reveal(chain.chain_id, dispute, other, keys)
    assert other.shared == good.shared
    st = AggState()
    assert st.add_reveal(good) and not st.add_reveal(other)
    # a point from a key other than the published one does not prove
    with pytest.raises(InvalidError, match="proof does not hold"):
        aggcheck.check_reveal(chain.chain_id, dispute, reveal(b, a, secrets[b] + 1), keys)
    tampered = sign(
        dataclasses.replace(good, shared=reveal(c, a, secrets[c]).shared),
        _signer(chain, b),
        chain.chain_id,
    )
    with pytest.raises(InvalidError, match="proof does not hold"):
        aggcheck.check_reveal(chain.chain_id, dispute, tampered, keys)
    with pytest.raises(InvalidError, match="names no such pair"):
        aggcheck.check_reveal(chain.chain_id, dispute, reveal(c, a, secrets[c]), keys)
    with pytest.raises(InvalidError, match="bad signature"):
        aggcheck.check_reveal(
            chain.chain_id, dispute, dataclasses.replace(good, member=a, partner=b), keys
        )
    # and the wire form round-trips
    assert PairReveal.decode(good.encode()) == good
    assert Dispute.decode(dispute.encode()) == dispute


def test_complete_and_unmask_come_from_whom_they_must(chain: Chain) -> None:
    sel = _selection(chain)
    proposer = chain.participants[0]
    comp = sign(Complete(sel.hash(), (b"\x03" * 32,) * 3, bytes(64)), proposer, chain.chain_id)
    aggcheck.check_complete(chain.chain_id, sel, comp)
    short = sign(Complete(sel.hash(), (b"\x03" * 32,) * 2, bytes(64)), proposer, chain.chain_id)
    with pytest.raises(InvalidError, match="one update hash per member"):
        aggcheck.check_complete(chain.chain_id, sel, short)
    outsider = chain.participants[3]
    um = sign(
        Unmask(sel.hash(), outsider.public, b"\x04" * 32, bytes(64)), outsider, chain.chain_id
    )
    with pytest.raises(InvalidError, match="not a member"):
        aggcheck.check_unmask(chain.chain_id, sel, um, None)


def _real_updates(
    chain: Chain, sel: Selection
) -> tuple[dict[bytes, MaskedUpdate], dict[bytes, int]]:
    """Signed updates with real seed sharings (t = 2) over a 4-parameter vector."""
    secrets = _secrets(sel)
    keys = _keys(secrets)
    out = {}
    for m in sel.members:
        others = [(o, keys[o]) for o in secagg.others_of(sel.members, m)]
        masks = secagg.member_masks(secrets[m], m, others, sel.hash(), 4, 2)
        unsigned = secagg.unsigned_update(sel.hash(), m, bytes(128), (), bytes(32), masks)
        out[m] = sign(unsigned, _signer(chain, m), chain.chain_id)
    return out, secrets


def test_an_update_carries_one_seed_share_per_other_member_and_t_commitments(
    chain: Chain,
) -> None:
    g = dataclasses.replace(
        chain.genesis,
        rule=dataclasses.replace(chain.genesis.rule, name="best-share", min_members=3),
        aggregation=dataclasses.replace(chain.genesis.aggregation, parameters=4),
    )
    sel = _selection(chain)
    updates, _ = _real_updates(chain, sel)
    m = sel.members[0]
    upd = dataclasses.replace(updates[m], pair_commitments=(secagg.mask_public(5),) * 2)
    aggcheck.check_update(g, chain.chain_id, sel, sign(upd, _signer(chain, m), chain.chain_id))
    few = dataclasses.replace(upd, seed_commitments=upd.seed_commitments[:1])
    with pytest.raises(InvalidError, match="1 seed commitments, not 2"):
        aggcheck.check_update(g, chain.chain_id, sel, sign(few, _signer(chain, m), chain.chain_id))
    short = dataclasses.replace(upd, seed_shares=upd.seed_shares[:1])
    with pytest.raises(InvalidError, match="one seed share per other member"):
        aggcheck.check_update(
            g, chain.chain_id, sel, sign(short, _signer(chain, m), chain.chain_id)
        )
    junk = dataclasses.replace(upd, seed_commitments=(b"\xff" * 32, upd.seed_commitments[1]))
    with pytest.raises(InvalidError, match="compressed point"):
        aggcheck.check_update(g, chain.chain_id, sel, sign(junk, _signer(chain, m), chain.chain_id))
    # a pair or self commitment that is no point, or a vector element not below R, could
    # never pass its check nor be evidence: refused at relay (the member counts as silent)
    for bad in (
        dataclasses.replace(upd, pair_commitments=(b"\xff" * 32, upd.pair_commitments[1])),
        dataclasses.replace(upd, self_commitment=b"\xff" * 32),
    ):
        with pytest.raises(InvalidError, match="compressed point"):
            aggcheck.check_update(
                g, chain.chain_id, sel, sign(bad, _signer(chain, m), chain.chain_id)
            )
    huge = dataclasses.replace(upd, vector=b"\xff" * len(upd.vector))
    with pytest.raises(InvalidError, match="not below the field modulus"):
        aggcheck.check_update(g, chain.chain_id, sel, sign(huge, _signer(chain, m), chain.chain_id))


def test_a_seed_share_must_open_the_owners_commitments(chain: Chain) -> None:
    """A valid share is accepted; a forged value, a share of a member outside the
    Complete, a share of oneself, or one signed by another key is refused."""
    sel = _selection(chain)
    updates, secrets = _real_updates(chain, sel)
    keys = _keys(secrets)
    proposer = chain.participants[0]
    comp = Complete(sel.hash(), tuple(updates[m].hash() for m in sel.members), bytes(64))
    comp = sign(comp, proposer, chain.chain_id)
    owner, holder = sel.members[0], sel.members[1]
    upd = updates[owner]
    sealed = upd.seed_shares[secagg.others_of(sel.members, owner).index(holder)]
    value = secagg.open_share(secrets[holder], holder, owner, keys[owner], sel.hash(), sealed)
    signer = _signer(chain, holder)

    def share(v: int, member: bytes = holder, own: bytes = owner) -> SeedShare:
        return sign(
            SeedShare(sel.hash(), member, own, upd.hash(), v.to_bytes(32, "big"), bytes(64)),
            signer,
            chain.chain_id,
        )

    aggcheck.check_seed_share(chain.chain_id, sel, comp, upd, share(value))
    with pytest.raises(InvalidError, match="does not open"):
        aggcheck.check_seed_share(chain.chain_id, sel, comp, upd, share(value + 1))
    with pytest.raises(InvalidError, match="two members"):
        aggcheck.check_seed_share(chain.chain_id, sel, comp, upd, share(value, owner, owner))
    other = sign(Complete(sel.hash(), (b"\x03" * 32,) * 3, bytes(64)), proposer, chain.chain_id)
    with pytest.raises(InvalidError, match="not in the selection's Complete"):
        aggcheck.check_seed_share(chain.chain_id, sel, other, upd, share(value))
    forged = dataclasses.replace(share(value), member=sel.members[2])
    with pytest.raises(InvalidError, match="bad signature"):
        aggcheck.check_seed_share(chain.chain_id, sel, comp, upd, forged)
    state = AggState()
    assert state.add_share(share(value)) and not state.add_share(share(value))
    assert state.recovering(owner) == {sel.hash()}


def _big_update(chain: Chain, sel: Selection, n: int) -> tuple[MaskedUpdate, bytes]:
    """A member's signed update for an n-element vector, and the whole vector."""
    m = sel.members[0]
    rng = random.Random(n)
    whole = secagg.encode_vector([rng.randrange(bn254.R) for _ in range(n)])
    updates, _ = _real_updates(chain, sel)
    pairs = (secagg.mask_public(5),) * 2
    unsigned = dataclasses.replace(updates[m], vector=whole, pair_commitments=pairs)
    header, rest = secagg.split_update(unsigned)
    assert secagg.whole_vector(header, rest) == whole
    return sign(header, _signer(chain, m), chain.chain_id), whole


def test_a_vector_above_one_message_travels_in_parts_its_signed_update_binds(
    chain: Chain,
) -> None:
    """v7: a 38,405-element vector is part 0 in the update and two VectorParts whose
    hashes the update signs; each part is checked against them (size, hash, index), the
    state counts the update whole only once every part is in, and an update of a small
    model keeps its version-1 bytes."""
    n = 2 * secagg.PART_LEN + 5
    g = dataclasses.replace(
        chain.genesis,
        rule=dataclasses.replace(chain.genesis.rule, name="best-share", min_members=3),
        aggregation=dataclasses.replace(chain.genesis.aggregation, parameters=n),
    )
    sel = _selection(chain)
    upd, whole = _big_update(chain, sel, n)
    assert len(upd.vector) == 32 * secagg.PART_LEN and len(upd.parts) == 2
    assert upd.version() == 7 and len(upd.encode()) <= MAX_GOSSIP_PAYLOAD
    aggcheck.check_update(g, chain.chain_id, sel, upd)
    parts = secagg.vector_parts(
        upd, [whole[32 * secagg.PART_LEN * i :][: 32 * secagg.PART_LEN] for i in (1, 2)]
    )
    assert [len(p.data) for p in parts] == [32 * secagg.PART_LEN, 32 * 5]
    for p in parts:
        assert len(p.encode()) <= MAX_GOSSIP_PAYLOAD
        assert decode_gossip(TopicKind.ROUND, p.encode()) == p
        aggcheck.check_part(g, upd, p)
    st = AggState()
    st.add_update(upd)
    assert st.whole(sel.hash()) == {}  # no part yet: the member's vector is not in
    assert st.add_part(parts[1]) and not st.add_part(parts[1])  # out of order; once
    assert st.whole(sel.hash()) == {}
    assert st.add_part(parts[0])
    ((got, rest),) = st.whole(sel.hash()).values()
    assert got == upd and secagg.whole_vector(got, rest) == whole

    tampered = dataclasses.replace(parts[0], data=b"\x01" + parts[0].data[1:])
    with pytest.raises(InvalidError, match="not the part the member's update signed"):
        aggcheck.check_part(g, upd, tampered)
    with pytest.raises(InvalidError, match="index 3, the update has 2"):
        aggcheck.check_part(g, upd, dataclasses.replace(parts[0], index=3))
    with pytest.raises(InvalidError, match="bytes, part 2 has 160"):
        aggcheck.check_part(g, upd, dataclasses.replace(parts[1], data=parts[0].data))
    with pytest.raises(InvalidError, match="not a part of this update"):
        aggcheck.check_part(g, upd, dataclasses.replace(parts[0], update=bytes(32)))
    with pytest.raises(InvalidError, match="the vector's parts are not the ones"):
        secagg.whole_vector(upd, [parts[1].data, parts[0].data])
    # an update that does not split as the model's size says is refused whole
    m = sel.members[0]
    for bad, why in (
        (dataclasses.replace(upd, parts=upd.parts[:1]), "1 further parts"),
        (dataclasses.replace(upd, vector=upd.vector[:-32]), "bytes, not"),
    ):
        with pytest.raises(InvalidError, match=why):
            aggcheck.check_update(
                g, chain.chain_id, sel, sign(bad, _signer(chain, m), chain.chain_id)
            )
    # a model that fits one message: no parts, the update's bytes are version 1's
    small, _ = _real_updates(chain, sel)
    header, rest = secagg.split_update(small[m])
    assert rest == () and header == small[m] and header.version() == 1
