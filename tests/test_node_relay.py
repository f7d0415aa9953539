"""The blocks topic's validator (node.blockrelay) with fake peers in virtual time.

Relay is decided on the cheap rules at once; the full validation (model fetch,
re-evaluation, proofs) runs afterwards in the relay's nursery. Here the fake prover
is slow, so a validator that waited for it would be seen waiting.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from consensus import blocks as consensus_blocks
from consensus.crypto import sha256
from consensus.rules import sign
from consensus.types import Block
from p2p import Verdict
from p2p.identity import peer_id_of_key
from prover.client import Commit, Evaluate
from support.chainfactory import Chain, make_chain
from support.fakes import FakeNode
from test_node import running_net, until

BUDGET_S = 0.01  # of virtual time: the cheap checks never wait for anything
SLOW_S = 20.0  # the prover's answer to the model checks


SCORES = {0: 3, 1: 2, 2: 1}


async def observe(node: FakeNode, nursery: trio.Nursery, chain: Chain, *blocks: Block) -> None:
    """Start `node`'s relay, make its model checks slow and give it the blocks' models."""
    await nursery.start(node.engine.relay.run)
    node.prover.delay_s[Commit] = node.prover.delay_s[Evaluate] = SLOW_S
    for b in blocks:  # round_block is deterministic: the same models again
        _, models = chain.round_block(b.round, b.parent, b.height, SCORES)
        for m in models.values():
            node.chain.store.put_blob(m)


def with_model(chain: Chain, block: Block, model: bytes) -> Block:
    """The same block naming another model, signed by its proposer: passes every cheap rule."""
    other = dataclasses.replace(block, model_hash=sha256(model))
    return sign(other, chain.key_of(block.proposer), chain.chain_id)


async def relay(node: FakeNode, block: Block, forwarder: FakeNode) -> Verdict:
    """One delivery to the validator, which must answer within the budget."""
    with trio.fail_after(BUDGET_S):
        raw = block.encode()
        return await node.engine.relay.validate(Block.decode(raw), raw, forwarder.net.peer_id)


async def test_a_block_is_relayed_at_once_and_applied_after_its_slow_full_validation(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, forwarder = nodes[0], nodes[3]
        block, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        await observe(observer, nursery, chain, block)
        start = trio.current_time()
        assert await relay(observer, block, forwarder) is Verdict.ACCEPT
        assert observer.chain.head == chain.chain_id, "not applied before its full validation"
        await until(lambda: observer.chain.head == block.hash(), SLOW_S + 1)
        assert trio.current_time() - start >= SLOW_S
        assert observer.net.penalties == []


async def test_the_cheap_rules_run_once_for_a_gossiped_block_and_its_copies(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One decode and one `on_block` per block: copies from other forwarders (and sync's
    copy while the first validation runs) wait for its flight; nothing checks it again."""
    chain = make_chain(n=3)
    checked: list[bytes] = []
    real = consensus_blocks.on_block

    def counting(*args: Any) -> Any:
        checked.append(args[-1].hash())
        return real(*args)

    monkeypatch.setattr(consensus_blocks, "on_block", counting)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, fwd1, fwd2 = nodes[0], nodes[2], nodes[3]
        block, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        await observe(observer, nursery, chain, block)
        assert await relay(observer, block, fwd1) is Verdict.ACCEPT
        assert await relay(observer, block, fwd2) is Verdict.IGNORE
        importer = observer.engine.importer
        assert importer.validating(block.hash())
        assert await importer.import_block(block, block.encode(), [fwd2.net.peer_id])
        assert observer.chain.head == block.hash()
        assert checked == [block.hash()]
        assert await importer.import_block(block, block.encode(), []), "known: no check"
        assert checked == [block.hash()]


async def test_an_invalid_block_is_relayed_at_most_once_per_proposer_and_round_never_applied(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, fwd1, fwd2 = nodes[0], nodes[2], nodes[3]
        good, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        bad = with_model(chain, good, b"\x03a model nobody committed to")
        bad2 = with_model(chain, good, b"\x03another one")
        fallback, _ = chain.round_block(0, chain.chain_id, 1, SCORES, proposer=1)
        await observe(observer, nursery, chain, good)
        observer.chain.store.put_blob(b"\x03a model nobody committed to")
        assert fwd1.key.public != bad.proposer and fwd2.key.public != bad.proposer
        # a forged signature is rejected at once and does not take the proposer's turn
        forged = dataclasses.replace(bad2, signature=bytes(64))
        assert await relay(observer, forged, fwd1) is Verdict.REJECT
        assert await relay(observer, bad, fwd1) is Verdict.ACCEPT  # it passes the cheap rules
        assert await relay(observer, bad, fwd2) is Verdict.IGNORE  # a copy: relayed once
        assert await relay(observer, bad2, fwd2) is Verdict.IGNORE  # its proposer's second
        assert await relay(observer, good, fwd2) is Verdict.IGNORE  # ... or third, this round
        assert await relay(observer, fallback, fwd2) is Verdict.ACCEPT  # another proposer's
        await until(lambda: observer.chain.head == fallback.hash(), 2 * SLOW_S)
        assert not observer.chain.has(bad.hash()), "never applied"
        assert bad.hash() in observer.engine.importer.refused
        assert await relay(observer, bad, fwd2) is Verdict.IGNORE, "nor relayed again"
        blamed = [p for p, _, _ in observer.net.penalties]
        assert blamed == [peer_id_of_key(bad.proposer)], "its signer, not who forwarded it"
        commits = [j for j in observer.prover.calls if isinstance(j, Commit)]
        assert len(commits) == 2, "bad and fallback validated; bad2 and good never were"


async def test_a_child_of_a_block_under_validation_is_relayed_and_applied_after_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, forwarder = nodes[0], nodes[2]
        parent, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        child, _ = chain.round_block(1, parent.hash(), 2, SCORES)
        await observe(observer, nursery, chain, parent, child)
        assert await relay(observer, parent, forwarder) is Verdict.ACCEPT
        assert await relay(observer, child, forwarder) is Verdict.ACCEPT
        await until(lambda: observer.chain.head == child.hash(), 3 * SLOW_S)
        assert observer.chain.has(parent.hash())


async def test_a_child_of_an_invalid_block_is_never_applied_and_its_proposer_not_blamed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, forwarder = nodes[0], nodes[2]
        good, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        bad = with_model(chain, good, b"\x03uncommitted")
        child, _ = chain.round_block(1, bad.hash(), 2, SCORES, proposer=1)
        await observe(observer, nursery, chain, good, child)
        observer.chain.store.put_blob(b"\x03uncommitted")
        assert await relay(observer, bad, forwarder) is Verdict.ACCEPT
        assert await relay(observer, child, forwarder) is Verdict.ACCEPT
        await until(lambda: child.hash() in observer.engine.importer.refused, 2 * SLOW_S)
        assert observer.chain.head == chain.chain_id
        assert [p for p, _, _ in observer.net.penalties] == [peer_id_of_key(bad.proposer)]


async def test_the_relay_passes_nothing_before_it_runs(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, _):
        block, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        assert await relay(nodes[0], block, nodes[2]) is Verdict.IGNORE


async def test_a_block_a_busy_worker_could_not_check_is_not_refused_and_imports_later(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A timeout is not a verdict: the block is neither refused nor its proposer blamed,
    and the next copy (here: the sync path) validates and applies it."""
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, forwarder = nodes[0], nodes[3]
        block, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        await observe(observer, nursery, chain, block)
        observer.prover.delay_s[Commit] = 1000.0  # past the checker's 30 s timeout
        assert await relay(observer, block, forwarder) is Verdict.ACCEPT
        importer = observer.engine.importer
        await until(lambda: not importer.validating(block.hash()), 100)
        assert not observer.chain.has(block.hash())
        assert block.hash() not in importer.refused
        assert observer.net.penalties == []
        observer.prover.delay_s[Commit] = 0.01
        assert await importer.import_block(block, block.encode(), [forwarder.net.peer_id])
        assert observer.chain.head == block.hash()


async def test_an_orphan_by_gossip_wakes_sync_and_one_sync_fetched_is_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Gossip may bring a child before its parent: sync fetches the parent, nothing is
    refused. Sync itself fetches in height order from our finalized block, so a block it
    fetched whose parent we lack does not join our chain: refused, and sync is not woken
    again at once (it would fetch that peer's chain in a loop)."""
    chain = make_chain(n=3)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer, forwarder = nodes[0], nodes[2]
        parent, _ = chain.round_block(0, chain.chain_id, 1, SCORES)
        child, _ = chain.round_block(1, parent.hash(), 2, SCORES)
        await observe(observer, nursery, chain, parent, child)
        importer, wakeup = observer.engine.importer, observer.engine.syncer.wakeup
        assert await relay(observer, child, forwarder) is Verdict.IGNORE
        assert child.hash() not in importer.refused
        assert wakeup._event.is_set(), "sync is asked to fetch the parent"
        await wakeup.wait(0)  # consumed
        assert not await importer.import_block(child, child.encode(), [forwarder.net.peer_id])
        assert child.hash() in importer.refused
        assert not wakeup._event.is_set()
        assert observer.net.penalties == []
