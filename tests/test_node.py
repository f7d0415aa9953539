"""The node's runtime (node.engine and what it wires) with a fake clock, network and prover.

Real chain stores, real consensus rules, real node code; the network is an
in-process mesh, the prover answers with hash stand-ins and time is virtual
(pytest-trio's autojump clock), so a round from commit to final block runs in
milliseconds. The end-to-end tests show the same with real processes and proofs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from consensus import schedule
from consensus.crypto import SigningKey, sha256
from consensus.types import Block, Reveal
from p2p import Verdict
from prover.client import Commit, Prove
from support.chainfactory import Chain, make_chain
from support.fakes import FakeNetwork, FakeNode, canonical, clock_at, make_node, until

SCORES = [3, 2, 1]  # participant i's models score SCORES[i]


@asynccontextmanager
async def running_net(
    tmp_path: Path, chain: Chain, *, start: bool = True
) -> AsyncIterator[tuple[FakeNetwork, list[FakeNode], trio.Nursery]]:
    """The publisher and every participant of `chain`, running in one nursery."""
    clock = clock_at(chain.genesis.timing.genesis_ms)
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        nodes = [make_node(network, chain, chain.publisher, tmp_path / "publisher", clock)]
        for i, key in enumerate(chain.participants):
            nodes.append(make_node(network, chain, key, tmp_path / f"p{i}", clock, k=SCORES[i]))
        if start:
            for n in nodes:
                nursery.start_soon(n.engine.run)
        try:
            yield network, nodes, nursery
        finally:
            nursery.cancel_scope.cancel()
    for n in nodes:
        n.chain.store.close()


def at(chain: Chain, rnd: int, offset_ms: int) -> float:
    """Virtual seconds from the test's start (1 s before genesis) to round `rnd` + offset."""
    return (
        schedule.slot_start(chain.genesis, rnd) + offset_ms - chain.genesis.timing.genesis_ms + 1000
    ) / 1000


async def sleep_to(chain: Chain, rnd: int, offset_ms: int = 0) -> None:
    await trio.sleep_until(at(chain, rnd, offset_ms))


async def test_rounds_from_commit_to_final_block_end_as_soon_as_their_work_is_done(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8, finality_depth=2)
    t = chain.genesis.timing
    async with running_net(tmp_path, chain) as (network, nodes, _):
        await sleep_to(chain, 0)
        # Every job is fast here, so no phase waits for its deadline: four rounds, each
        # to a block on every node, take less time than one round's commit window.
        await until(lambda: all(len(canonical(n)) >= 4 for n in nodes), t.commit_ms / 1000)
        await until(lambda: len({n.chain.head for n in nodes}) == 1, 1)
        blocks = canonical(nodes[0])
        assert [b.round for b in blocks] == list(range(len(blocks)))
        best = chain.participants[0].public
        assert all(b.proposer == best and b.rank == 1 for b in blocks)
        assert all(len(b.proofs) == 3 for b in blocks), "every sealed proof is in the block"
        for n in nodes:
            fin = n.chain.forks.node(n.chain.forks.finalized).height
            assert fin == n.chain.head_height() - 2
            assert n.net.penalties == []
        assert all(v is not Verdict.REJECT for _, _, v in network.verdicts)
        # Each block's model is the winner's own; the others' weights never left their node.
        for n in nodes[2:]:
            trained = {j.weights for j in n.prover.calls if type(j).__name__ == "Commit"}
            assert trained
            for item in n.net.gossip.published:
                assert not any(w in item.encode() for w in trained)


async def test_a_round_without_a_block_ends_at_its_deadline_and_the_next_goes_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8)
    t = chain.genesis.timing
    async with running_net(tmp_path, chain) as (network, nodes, _):
        # Round 1: the publisher's reveal reaches no one, so no block can be made.
        network.hold = lambda src, dst, item: (
            1e6 if isinstance(item, Reveal) and item.round == 1 and dst is not src else 0.0
        )
        await sleep_to(chain, 0)
        await until(lambda: all(n.engine.rounds.current == 1 for n in nodes), 2)
        opened = nodes[1].engine.rounds.opened_at(1)
        await trio.sleep_until(at(chain, 0, opened - t.genesis_ms + t.round_ms - 100))
        assert all(len(canonical(n)) == 1 for n in nodes)
        assert all(n.engine.rounds.current == 1 for n in nodes), "round 1 lasts its round_ms"
        await until(lambda: all(len(canonical(n)) >= 3 for n in nodes), t.round_ms / 1000)
        rounds = [b.round for b in canonical(nodes[1])]
        assert rounds[0] == 0 and 1 not in rounds, "round 1 made no block; later ones did"


async def test_a_late_better_block_wins_over_the_fallback_block(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8, finality_depth=3)
    t = chain.genesis.timing
    async with running_net(tmp_path, chain) as (network, nodes, _):
        winner = nodes[1]
        first_fallback = t.commit_ms + t.proof_ms + t.fallback_ms
        # Round 0's rank-1 block reaches the others only after rank 2's turn.
        late_s = (first_fallback + 500) / 1000
        network.hold = lambda src, dst, item: (
            late_s
            if src is winner.net and dst is not src and isinstance(item, Block) and item.round == 0
            else 0.0
        )
        await sleep_to(chain, 0, 500)
        assert len(canonical(winner)) == 1
        for n in nodes:  # and it cannot be synced from the winner either, until the heal
            if n is not winner:
                network.partition(winner.net, n.net)
        await sleep_to(chain, 0, first_fallback + 300)
        fallback = [canonical(n) for n in nodes if n is not winner]
        assert all(len(c) == 1 and c[0].rank == 2 for c in fallback), "rank 2 stood in"
        network.cut.clear()
        # Once the late block arrives, every node's chain runs through it.
        await until(lambda: all(canonical(n)[0].proposer == winner.key.public for n in nodes), 3)
        head = canonical(winner)[0]
        assert head.rank == 1

        def round0(n: FakeNode) -> list[Block]:
            found = [n.chain.block(x.hash) for x in n.chain.forks.nodes.values() if x.height == 1]
            return [b for b in found if b is not None]

        others = [n for n in nodes if n is not winner]
        assert all(len(round0(n)) == 2 for n in others), "both round-0 blocks are kept"
        third = nodes[3].key.public
        assert not any(b.proposer == third for n in nodes for b in round0(n)), (
            "rank 3 abstained: a better block existed"
        )


async def test_a_commit_waits_for_its_parent_block(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer = nodes[0]
        await nursery.start(observer.engine.relay.run)
        block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 2, 2: 1})
        idx = chain.participants.index(chain.key_of(block.proposer))
        observer.chain.store.put_blob(models[idx])
        await sleep_to(chain, 1, 500)
        peer = nodes[1].net.peer_id
        child = chain.commit(chain.participants[1], 1, block.hash(), b"\x02child model")
        pool = observer.engine.pool
        assert await pool.validate(child, peer) is Verdict.IGNORE, "parent unknown: held"
        assert child.hash() not in pool.state(1).commits
        arrived = observer.engine.clock()
        await trio.sleep(1)
        assert await observer.engine.relay.validate(block, block.encode(), peer) is Verdict.ACCEPT
        await until(lambda: observer.chain.has(block.hash()), 1)
        assert pool.state(1).commits[child.hash()] == child
        assert pool.state(1).received_ms[child.hash()] == arrived, (
            "its arrival time decides sealing"
        )
        # A second commit of the same participant on the same parent is not counted.
        other = chain.commit(chain.participants[1], 1, block.hash(), b"\x02another")
        assert await pool.validate(other, peer) is Verdict.IGNORE
        assert other.hash() not in pool.state(1).commits


async def test_a_late_node_imports_the_chain_by_sync(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8, finality_depth=2)
    async with running_net(tmp_path, chain) as (network, nodes, nursery):
        for n in nodes:  # slow proofs: rounds take a few seconds, so the late node has a past
            n.prover.delay_s[Prove] = 2.0
        await until(lambda: len(canonical(nodes[0])) >= 3, 30)
        late = make_node(
            network,
            chain,
            SigningKey(sha256(b"late observer")),
            tmp_path / "late",
            nodes[0].engine.clock,
        )
        nodes.append(late)
        nursery.start_soon(late.engine.run)
        await until(lambda: late.chain.head == nodes[0].chain.head, 4)  # its first poll: 3 s
        assert [b.round for b in canonical(late)][:3] == [0, 1, 2]
        seen = [late.roundlog.get(r) for r in (0, 1, 2)]
        assert all(rec is None or not rec.commits for rec in seen), "rounds 0-2 came by sync"
        height = late.chain.head_height()
        await until(lambda: late.chain.head_height() > height, 30)
        await until(lambda: len({n.chain.head for n in nodes}) == 1, 5)


async def test_copies_of_a_block_under_validation_wait_for_that_one_validation(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, nursery):
        observer = nodes[0]
        await nursery.start(observer.engine.relay.run)
        observer.prover.delay_s[Commit] = 1.0  # validation takes a while
        block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 2, 2: 1})
        idx = chain.participants.index(chain.key_of(block.proposer))
        observer.chain.store.put_blob(models[idx])
        verdicts: list[Verdict] = []

        async def deliver(src: FakeNode) -> None:
            item = Block.decode(block.encode())
            verdicts.append(
                await observer.engine.relay.validate(item, block.encode(), src.net.peer_id)
            )

        async with trio.open_nursery() as inner:
            for src in nodes[1:]:  # three forwarders at once: relayed once
                inner.start_soon(deliver, src)
        assert sorted(v.value for v in verdicts) == ["accept", "ignore", "ignore"]
        # the same block by sync meanwhile waits for the gossip copy's validation
        assert await observer.engine.importer.import_block(block, block.encode(), [])
        assert sum(isinstance(j, Commit) for j in observer.prover.calls) == 1
        assert observer.chain.head == block.hash()


async def test_a_silent_peer_does_not_slow_catching_up(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = make_chain(n=3, num_batches=8, finality_depth=2)
    async with running_net(tmp_path, chain) as (network, nodes, nursery):
        await until(lambda: len(canonical(nodes[0])) >= 3, 30)
        network.add(sha256(b"silent"))  # a connected peer that never answers anything

        late = make_node(
            network, chain, SigningKey(sha256(b"late")), tmp_path / "late", nodes[0].engine.clock
        )
        start = trio.current_time()
        height = nodes[0].chain.head_height()
        await late.engine.syncer.sync_once()
        assert late.chain.head_height() >= height, "caught up past the silent peer"
        assert trio.current_time() - start < 5, "one short status deadline, not one per peer"
        del nursery


async def test_two_sides_of_an_equal_score_fork_converge_by_sync(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Each side missed the other's block (seen in the multi-host test: its model could
    not be fetched in time): the scores are equal, so only fork choice's tie-break
    decides, and the side whose head loses it must pull the other's by sync."""
    chain = make_chain(n=3, num_batches=8, finality_depth=2)
    async with running_net(tmp_path, chain, start=False) as (_, nodes, _nursery):
        a, b = nodes[1], nodes[2]
        forks = [chain.round_block(0, chain.chain_id, 1, {0: 2, 1: 2}, proposer=p) for p in (0, 1)]
        for side, (block, models) in zip((a, b), forks, strict=True):
            for m in models.values():
                side.chain.store.put_blob(m)
            assert await side.engine.importer.import_block(block, block.encode(), [])
        heads = sorted(block.hash() for block, _ in forks)
        assert {a.chain.head, b.chain.head} == set(heads)
        assert a.chain.node(a.chain.head).score == b.chain.node(b.chain.head).score
        for side in (a, b):
            await side.engine.syncer.sync_once()
        assert a.chain.head == b.chain.head == heads[0], "both on the tie-break's winner"
