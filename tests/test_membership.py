"""The participant set as chain state (consensus.membership), pure: admissions, removals
and exits take effect from their stated round, only with the right signatures, and
block validity reads the set of the block's round on its parent, so two branches that
carry different changes have different sets (a reorg needs nothing undone)."""

from __future__ import annotations

import dataclasses

import pytest

from consensus import blocks, membership
from consensus.blocks import ParentInfo
from consensus.crypto import SigningKey, sha256
from consensus.errors import InvalidError
from consensus.membership import MAX_NOTICE, Roster, genesis_roster
from consensus.rules import sign
from consensus.types import (
    ADMIT,
    EXIT,
    MAX_MEMBERSHIP_PER_BLOCK,
    REMOVE,
    Block,
    JoinRequest,
    Membership,
)
from support import plaincheck
from support.chainfactory import Chain, hash_verify, make_chain, model_commitment, model_score

NEWCOMER = SigningKey(sha256(b"newcomer"))


@pytest.fixture
def chain() -> Chain:
    return make_chain()


def request(chain: Chain, who: SigningKey = NEWCOMER) -> bytes:
    return sign(JoinRequest(who.public, bytes(64)), who, chain.chain_id).signature


def admit(
    chain: Chain, who: SigningKey = NEWCOMER, from_round: int = 2, signer: SigningKey | None = None
) -> Membership:
    tx = Membership(ADMIT, who.public, from_round, request(chain, who), bytes(64))
    return sign(tx, signer or chain.publisher, chain.chain_id)


def change(chain: Chain, kind: int, who: bytes, from_round: int, signer: SigningKey) -> Membership:
    return sign(Membership(kind, who, from_round, b"", bytes(64)), signer, chain.chain_id)


def apply(chain: Chain, roster: Roster, rnd: int, *txs: Membership) -> Roster:
    return membership.apply(
        chain.genesis, chain.chain_id, roster, rnd, sorted(txs, key=lambda t: t.hash())
    )


def test_an_admission_takes_effect_from_its_round(chain: Chain) -> None:
    start = genesis_roster(chain.genesis)
    after = apply(chain, start, 0, admit(chain, from_round=2))
    assert NEWCOMER.public not in after.at(1)
    assert NEWCOMER.public in after.at(2) and NEWCOMER.public in after.at(7)
    assert NEWCOMER.public in after.eventual()
    assert after.at(1) == start.at(1) == frozenset(chain.genesis.participants)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: admit(c, signer=c.participants[0]), "bad signature"),
        (
            lambda c: sign(
                Membership(ADMIT, NEWCOMER.public, 2, request(c, c.participants[0]), bytes(64)),
                c.publisher,
                c.chain_id,
            ),
            "JoinRequest: bad signature",
        ),
        (lambda c: admit(c, from_round=0), "takes effect in round 0"),
        (lambda c: admit(c, from_round=1 + MAX_NOTICE), "may set rounds 1"),
        (lambda c: admit(c, who=c.participants[1]), "already a participant"),
        (lambda c: admit(c, who=c.publisher), "the publisher cannot be a participant"),
    ],
)
def test_a_bad_admission_is_refused(chain: Chain, make: object, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        apply(chain, genesis_roster(chain.genesis), 0, make(chain))  # type: ignore[operator]


def test_a_participant_leaves_by_itself_or_is_removed_by_the_publisher(chain: Chain) -> None:
    roster = genesis_roster(chain.genesis)
    a, b = chain.participants[0], chain.participants[1]
    after = apply(
        chain,
        roster,
        3,
        change(chain, EXIT, a.public, 5, a),
        change(chain, REMOVE, b.public, 4, chain.publisher),
    )
    assert a.public in after.at(4) and a.public not in after.at(5)
    assert b.public in after.at(3) and b.public not in after.at(4)
    assert after.eventual() == frozenset(chain.genesis.participants) - {a.public, b.public}
    with pytest.raises(InvalidError, match="bad signature"):
        apply(chain, roster, 3, change(chain, EXIT, a.public, 5, b))  # someone else's exit
    with pytest.raises(InvalidError, match="bad signature"):
        apply(chain, roster, 3, change(chain, REMOVE, a.public, 5, b))  # not the publisher
    with pytest.raises(InvalidError, match="not a participant"):
        apply(chain, roster, 3, change(chain, EXIT, NEWCOMER.public, 5, NEWCOMER))
    with pytest.raises(InvalidError, match="only an admission carries a request"):
        tx = dataclasses.replace(change(chain, EXIT, a.public, 5, a), request=b"x" * 64)
        apply(chain, roster, 3, sign(tx, a, chain.chain_id))


def test_the_last_participant_cannot_leave_and_one_may_come_back_later() -> None:
    solo = make_chain(n=1)
    only = solo.participants[0]
    with pytest.raises(InvalidError, match="the last participant cannot leave"):
        apply(solo, genesis_roster(solo.genesis), 0, change(solo, EXIT, only.public, 1, only))
    c = make_chain()
    gone = apply(
        c,
        genesis_roster(c.genesis),
        0,
        change(c, EXIT, c.participants[0].public, 3, c.participants[0]),
    )
    with pytest.raises(InvalidError, match="overlaps its previous tenure"):
        apply(c, gone, 1, admit(c, who=c.participants[0], from_round=2))
    back = apply(c, gone, 1, admit(c, who=c.participants[0], from_round=4))
    key = c.participants[0].public
    assert [key in back.at(r) for r in range(6)] == [True, True, True, False, True, True]


def test_a_block_carries_changes_sorted_and_one_per_key(chain: Chain) -> None:
    roster = genesis_roster(chain.genesis)
    a = chain.participants[0]
    one, two = admit(chain, from_round=2), admit(chain, from_round=3)
    with pytest.raises(InvalidError, match="two membership changes for one key"):
        apply(chain, roster, 0, one, two)
    pair = sorted([admit(chain), change(chain, EXIT, a.public, 2, a)], key=lambda t: t.hash())
    with pytest.raises(InvalidError, match="sorted by hash"):
        membership.apply(chain.genesis, chain.chain_id, roster, 0, list(reversed(pair)))


def test_the_honest_proposer_picks_what_is_still_valid(chain: Chain) -> None:
    roster = genesis_roster(chain.genesis)
    a = chain.participants[0]
    stale = admit(chain, from_round=1)  # valid for a block of round 0 only
    good = change(chain, EXIT, a.public, 4, a)
    forged = admit(chain, signer=a)
    picked = membership.pick(chain.genesis, chain.chain_id, roster, 1, [stale, forged, good, good])
    assert picked == (good,)
    many = [
        admit(chain, SigningKey(sha256(bytes([i]))), 5) for i in range(MAX_MEMBERSHIP_PER_BLOCK + 3)
    ]
    assert (
        len(membership.pick(chain.genesis, chain.chain_id, roster, 1, many))
        == MAX_MEMBERSHIP_PER_BLOCK
    )


def _on(chain: Chain, parent: ParentInfo, block: Block, model: bytes) -> int:
    return plaincheck.check_block(
        chain.genesis,
        chain.chain_id,
        parent,
        block,
        model,
        hash_verify,
        model_commitment,
        model_score,
    )


def _signed(chain: Chain, block: Block, **changes: object) -> Block:
    body = dataclasses.replace(block, **changes)  # type: ignore[arg-type]
    return sign(body, chain.key_of(block.proposer), chain.chain_id)


def test_block_validity_reads_the_set_of_the_blocks_round_on_its_parent(chain: Chain) -> None:
    chain.participants.append(NEWCOMER)  # so the factory can sign for it (not in the genesis)
    newcomer = len(chain.participants) - 1
    genesis_parent = ParentInfo(chain.chain_id, -1, 0)
    # block 1 (round 0) admits the newcomer from round 2
    b1, m1 = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 2, 2: 1})
    b1 = _signed(chain, b1, membership=(admit(chain, from_round=2),))
    _on(chain, genesis_parent, b1, m1[0])
    r1 = blocks.on_block(chain.genesis, chain.chain_id, genesis_parent, b1).roster
    h1 = sha256(b1.encode())
    p1 = ParentInfo(h1, 0, 1, b1.model_hash, r1)
    # round 1: the newcomer is not a participant yet
    early, m = chain.round_block(1, h1, 2, {0: 2, newcomer: 3})
    with pytest.raises(InvalidError, match="not a participant of round 1"):
        _on(chain, p1, early, m[newcomer])
    # round 2: its commit counts and it may propose
    b3, m3 = chain.round_block(2, h1, 2, {0: 2, newcomer: 3})
    assert b3.proposer == NEWCOMER.public
    assert _on(chain, p1, b3, m3[newcomer]) == 3
    # on a branch without the admission (a reorg), the same block is not valid
    with pytest.raises(InvalidError, match="not a participant of round 2"):
        _on(
            chain,
            genesis_parent,
            dataclasses.replace(b3, height=1, parent=chain.chain_id),
            m3[newcomer],
        )


def test_a_removed_participant_cannot_propose_from_its_round(chain: Chain) -> None:
    genesis_parent = ParentInfo(chain.chain_id, -1, 0)
    b1, _ = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 2, 2: 1})
    gone = chain.participants[2]
    b1 = _signed(chain, b1, membership=(change(chain, REMOVE, gone.public, 1, chain.publisher),))
    r1 = blocks.on_block(chain.genesis, chain.chain_id, genesis_parent, b1).roster
    p1 = ParentInfo(sha256(b1.encode()), 0, 1, b1.model_hash, r1)
    b2, m2 = chain.round_block(1, p1.hash, 2, {1: 1, 2: 3})
    assert b2.proposer == gone.public
    with pytest.raises(InvalidError, match="proposer is not a participant of round 1"):
        _on(chain, p1, b2, m2[2])
