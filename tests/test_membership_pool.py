"""The node's pending changes of the participant set (node.membershippool) over a real
chain store: what it relays, what it ignores, what it rejects, and what a block of ours
carries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consensus.crypto import SigningKey, sha256
from consensus.errors import InvalidError
from consensus.rules import sign
from consensus.types import ADMIT, EXIT, JoinRequest, Membership
from node.chain import Chain as NodeChain
from node.membershippool import MAX_REQUESTS, REQUESTS_PER_PEER, MembershipPool
from p2p import Verdict
from storage import ChainStore
from support.chainfactory import Chain, make_chain
from support.fakes import INITIAL_MODEL

NEWCOMER = SigningKey(sha256(b"newcomer"))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Chain, MembershipPool]:
    chain = make_chain()
    node_chain = NodeChain(ChainStore.open(tmp_path / "store"), chain.genesis, INITIAL_MODEL)
    return chain, MembershipPool(node_chain, lambda: 0)


def _request(chain: Chain, who: SigningKey = NEWCOMER) -> JoinRequest:
    return sign(JoinRequest(who.public, bytes(64)), who, chain.chain_id)


def _admit(chain: Chain, from_round: int = 3, signer: SigningKey | None = None) -> Membership:
    tx = Membership(ADMIT, NEWCOMER.public, from_round, _request(chain).signature, bytes(64))
    return sign(tx, signer or chain.publisher, chain.chain_id)


def test_a_join_request_is_kept_once_and_a_members_is_ignored(
    setup: tuple[Chain, MembershipPool],
) -> None:
    chain, pool = setup
    assert pool.on_request(_request(chain)) is Verdict.ACCEPT
    assert pool.on_request(_request(chain)) is Verdict.IGNORE
    assert pool.on_request(_request(chain, chain.participants[0])) is Verdict.IGNORE
    forged = JoinRequest(NEWCOMER.public, _request(chain, chain.participants[0]).signature)
    with pytest.raises(InvalidError, match="bad signature"):
        pool.on_request(forged)


def test_fresh_keys_from_one_peer_cannot_flush_the_request_pool(tmp_path: Path) -> None:
    """Attack 5 of the v2 review: JoinRequests of fresh keys are free and pushed real ones
    out of the 256-key pool. Each peer may now bring REQUESTS_PER_PEER new keys a round."""
    chain = make_chain()
    node_chain = NodeChain(ChainStore.open(tmp_path / "store"), chain.genesis, INITIAL_MODEL)
    rnd = [5]
    pool = MembershipPool(node_chain, lambda: rnd[0])
    assert pool.on_request(_request(chain), "honest-peer") is Verdict.ACCEPT
    flood = [SigningKey(sha256(b"sybil%d" % i)) for i in range(MAX_REQUESTS + 10)]
    verdicts = [pool.on_request(_request(chain, k), "flooder") for k in flood]
    assert verdicts.count(Verdict.ACCEPT) == REQUESTS_PER_PEER
    assert NEWCOMER.public in pool.requests  # the real request stays
    rnd[0] = 6  # a new round: a new quota
    assert pool.on_request(_request(chain, flood[-1]), "flooder") is Verdict.ACCEPT
    # this node's own API has no quota
    assert pool.on_request(_request(chain, flood[-2])) is Verdict.ACCEPT


def test_changes_are_relayed_when_valid_on_the_head_and_carried_by_our_block(
    setup: tuple[Chain, MembershipPool],
) -> None:
    chain, pool = setup
    admit = _admit(chain)
    assert pool.on_change(admit) is Verdict.ACCEPT
    assert pool.on_change(admit) is Verdict.IGNORE  # already pending
    with pytest.raises(InvalidError, match="bad signature"):  # not the publisher's
        pool.on_change(_admit(chain, signer=chain.participants[0]))
    stale = _admit(chain, from_round=0)
    assert pool.on_change(stale) is Verdict.IGNORE  # signatures hold; not carriable now
    a = chain.participants[0]
    leave = sign(Membership(EXIT, a.public, 2, b"", bytes(64)), a, chain.chain_id)
    assert pool.on_change(leave) is Verdict.ACCEPT
    carried = pool.for_block(chain.chain_id, 0)
    assert set(carried) == {admit, leave}
    assert [t.hash() for t in carried] == sorted(t.hash() for t in carried)
    # a block of round 2 can no longer carry the exit (it takes effect in round 2)
    assert pool.for_block(chain.chain_id, 2) == (admit,)


async def test_a_change_a_block_carried_is_no_longer_pending_on_any_node(
    setup: tuple[Chain, MembershipPool],
) -> None:
    """Issue 22: admissions stayed "pending" long after blocks carried them, on nodes that
    never proposed (only a proposer pruned). A node that only follows prunes too."""
    chain, pool = setup
    admit = _admit(chain)
    assert pool.on_request(_request(chain)) is Verdict.ACCEPT
    assert pool.on_change(admit) is Verdict.ACCEPT
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3})
    carried = sign(
        dataclasses.replace(block, membership=(admit,)),
        chain.key_of(block.proposer),
        chain.chain_id,
    )
    await pool.chain.apply(carried, carried.encode(), [models[0]], 3)
    assert pool.chain.head == sha256(carried.encode())
    pool.prune(1)
    assert pool.pending == {} and NEWCOMER.public not in pool.requests
