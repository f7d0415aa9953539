"""Protocol v4's aggregation round in the node's own code, in virtual time.

The real engine, participant, member and aggregator loops, round pool and chain run
for a best-share chain; only the clock, the network and the prover are fakes, and the
fake prover does the masking jobs with the real arithmetic over a 16-point basis
(support.fakes: a model's 16 bytes are its parameters, its commitment L(q) + K is a
real curve point, so every block's aggregate check is the real one). One participant
misbehaves by having one of its node's methods replaced, as a malicious node would.
"""

from __future__ import annotations

import dataclasses
import types
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from consensus import aggpolicy, bn254, evidence, masking, optimizer, secagg
from consensus.crypto import sha256
from consensus.rules import sign
from consensus.secagg import (
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
    VectorPart,
)
from consensus.types import BAD_UPDATE, Block, CommitTx, Evidence, ProofTx
from node.participant import Participant
from node.roundpool import Mine, RoundState
from p2p import Verdict
from p2p.identity import peer_id_of_key
from prover.client import MaskVector, Prove, StepModel
from support.chainfactory import Chain, make_chain
from support.fakes import (
    FAKE_PARAMS,
    INITIAL_MODEL,
    FakeNetwork,
    FakeNode,
    FakeProver,
    aggregating,
    canonical,
    clock_at,
    fake_linear,
    fake_step,
    make_node,
    until,
)
from support.malicious_node import keep_parent_at_once, serve_copying

SCORES = [4, 3, 3, 2]  # the rule selects 3 of 4 fresh models


def _chain() -> Chain:
    base = make_chain(n=len(SCORES), num_batches=12)
    return Chain(base.participants, base.publisher, aggregating(base.genesis), base.batches)


@asynccontextmanager
async def agg_net(
    tmp_path: Path,
    chain: Chain,
    prove_s: list[float] | None = None,
    scores: list[int] = SCORES,
) -> AsyncIterator[tuple[FakeNetwork, list[FakeNode], trio.Nursery, list[Any]]]:
    """Publisher and participants, started; the last item collects every published
    message. `prove_s[i]`: how long participant i's proofs take (virtual seconds)."""
    clock = clock_at(chain.genesis.timing.genesis_ms)
    sent: list[Any] = []
    async with trio.open_nursery() as nursery:
        network = FakeNetwork(nursery)
        deliver = network.deliver

        async def recording(src: Any, item: Any) -> None:
            sent.append(item)
            await deliver(src, item)

        network.deliver = recording  # type: ignore[method-assign]
        nodes = [
            make_node(
                network,
                chain,
                chain.publisher,
                tmp_path / "pub",
                clock,
                prover=FakeProver(aggregating=True),
            )
        ]
        for i, key in enumerate(chain.participants):
            nodes.append(
                make_node(
                    network,
                    chain,
                    key,
                    tmp_path / f"p{i}",
                    clock,
                    k=scores[i],
                    prover=FakeProver(
                        {} if prove_s is None else {Prove: prove_s[i]}, aggregating=True
                    ),
                )
            )
        yield network, nodes, nursery, sent
        nursery.cancel_scope.cancel()
    for n in nodes:
        n.chain.store.close()


def _start(nursery: trio.Nursery, nodes: list[FakeNode]) -> None:
    for n in nodes:
        nursery.start_soon(n.engine.run)


async def test_every_block_carries_a_private_aggregate(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, sent):
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 4 for n in nodes), 120)
        blocks = canonical(nodes[1])[:4]
    for b in blocks:
        assert len(b.members) == 3, b
    # each member unmasked at most once per round
    unmasks = Counter((m.member, m.selection) for m in sent if isinstance(m, Unmask))
    per_round: Counter[tuple[bytes, int]] = Counter()
    selections = {m.hash(): m for m in sent if type(m).__name__ == "Selection"}
    for member, h in unmasks:
        per_round[(member, selections[h].round)] += 1
    assert per_round and max(per_round.values()) == 1


async def test_a_momentum_chain_steps_the_global_model_with_each_aggregate(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """v6: every block names its aggregate M and velocity V'; its model is the server
    step from its parent's model and velocity, which every node checked and stored."""
    base = _chain()
    spec = dataclasses.replace(
        base.genesis.rule,
        server="momentum",
        momentum_num=7,
        momentum_den=10,
        velocity_scale=256,
        guard_members=3,
    )
    chain = Chain(
        base.participants,
        base.publisher,
        dataclasses.replace(base.genesis, rule=spec),
        base.batches,
    )
    momentum = optimizer.server_of(spec)
    assert momentum is not None
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, _sent):
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 4 for n in nodes), 120)
        blocks = canonical(nodes[1])[:4]
        model, velocity = INITIAL_MODEL, b""
        stepped_further = 0
        for b in blocks:
            assert len(b.members) == 3 and b.aggregate_hash and b.velocity_hash, b
            for n in nodes:  # every node holds the three blobs
                blobs = [n.chain.store.get_blob(h) for h in (b.aggregate_hash, b.velocity_hash)]
                assert None not in blobs
            store = nodes[1].chain.store
            mean = store.get_blob(b.aggregate_hash)
            assert mean is not None
            job = StepModel("", "", model, velocity, mean, momentum)
            model, velocity = fake_step(job)
            assert (sha256(model), sha256(velocity)) == (b.model_hash, b.velocity_hash)
            stepped_further += b.model_hash != b.aggregate_hash
        assert stepped_further  # from the second aggregate on, the velocity moves G past M


def _front_run(p: Participant) -> None:
    """Attack 3, in this node only (support.malicious_node's move)."""

    async def propose_when_due(
        self: Participant, rnd: int, opened: int, st: RoundState, mine: Mine
    ) -> None:
        await keep_parent_at_once(self, rnd, st, mine)

    p._propose_when_due = types.MethodType(propose_when_due, p)  # type: ignore[method-assign]


async def test_a_keep_parent_front_runner_neither_wins_nor_cancels_the_aggregate(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Fails on version 2: the cheap block arrived first, every honest proposer abstained
    on it and it opened the next round, so no aggregate was ever made."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, sent):
        attacker = nodes[4]
        assert attacker.engine.participant is not None
        _front_run(attacker.engine.participant)
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 5 for n in nodes[:4]), 300)
        blocks = canonical(nodes[1])[:4]  # the head's round may still be aggregating
    cheap = [b for b in sent if isinstance(b, Block) and b.proposer == attacker.key.public]
    assert cheap and all(not b.members for b in cheap)  # the attack was delivered
    assert all(b.members for b in blocks), [(b.round, b.proposer.hex()[:8]) for b in blocks]
    assert not {sha256(b.encode()) for b in cheap} & {sha256(b.encode()) for b in blocks}


def _silent_after_update(node: FakeNode) -> None:
    """The member sends its masked vector, then is gone: it never unmasks, never shares."""
    p = node.engine.participant
    assert p is not None and p.aggregation is not None
    agg = p.aggregation

    async def never(self: Any, st: RoundState, mine: Mine) -> None:
        return None

    agg._maybe_unmask = types.MethodType(never, agg)  # type: ignore[method-assign]
    agg._maybe_share = types.MethodType(never, agg)  # type: ignore[method-assign]


async def test_a_member_silent_after_complete_is_recovered_from_the_others_shares(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Version 5: the best-ranked member (selected every round) never unmasks. The
    others reveal their shares of its self seed, the aggregator recovers it, and every
    round's block still carries the aggregate of all three members (the chain's block
    check recomputes it against their commitments). Fails on version 4: those rounds
    kept the parent's model."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, sent):
        _silent_after_update(nodes[1])
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 3 for n in nodes), 300)
        blocks = canonical(nodes[2])[:3]
    silent = nodes[1].key.public
    for b in blocks:
        assert silent in b.members and len(b.members) == 3, b
    assert not any(isinstance(m, Unmask) and m.member == silent for m in sent)
    shares = [m for m in sent if isinstance(m, SeedShare)]
    assert shares and all(m.owner == silent for m in shares)


async def test_fewer_survivors_than_the_threshold_make_no_aggregate(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Two of three members go silent after their vectors: one survivor holds fewer than
    t = 2 shares of each seed, so no sum is finished, the rounds keep the parent's model
    (the hold on a keep-parent head lets the next round open once the aggregation has
    gone quiet) and the chain goes on."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, _sent):
        _silent_after_update(nodes[1])  # the two best-ranked: selected every round
        _silent_after_update(nodes[2])
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 3 for n in nodes), 300)
        blocks = canonical(nodes[3])[:3]
    rounds = [b.round for b in blocks]
    assert rounds == sorted(set(rounds))
    for b in blocks:
        assert not b.members or not {nodes[1].key.public, nodes[2].key.public} <= set(b.members)


async def test_copied_selections_and_baseless_disputes_change_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Attack 1 in the node's code: a participant copies every selection under its key
    and disputes all its pairs, on the copy and on the original. Honest nodes refuse
    the disputes (penalising it), nobody reveals a pair secret, every round aggregates."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, sent):
        attacker = nodes[4].engine.participant
        assert attacker is not None and attacker.aggregation is not None
        agg = attacker.aggregation

        async def serve(self: Any, st: RoundState, mine: Mine, opened: int) -> None:
            await serve_copying(self, st, mine, opened)

        agg.serve = types.MethodType(serve, agg)  # type: ignore[method-assign]
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 4 for n in nodes), 200)
        blocks = canonical(nodes[1])[:3]
        refused = 0
        for n in nodes[:4]:
            log = n.engine.pool.roundlog
            refused += sum(
                log.record(r).aggregation.get("refused:Dispute", 0) for r in log.rounds()
            )
    disputes = [m for m in sent if isinstance(m, Dispute)]
    assert disputes and refused > 0  # the attack was delivered, and refused
    assert not any(isinstance(m, PairReveal) for m in sent)
    assert all(b.members for b in blocks)


def _unmask_with_a_wrong_seed(node: FakeNode) -> None:
    """The member unmasks every Complete that lists it, with a seed its own seed sharing
    does not commit to (a member trying to spoil the sum)."""
    p = node.engine.participant
    assert p is not None and p.aggregation is not None
    agg = p.aggregation

    async def wrong(self: Any, st: RoundState, mine: Mine) -> None:
        me = self.key.public
        for h in list(st.agg.completes):
            if h in st.agg.answered and me not in st.agg.unmasks.get(h, {}):
                um = sign(Unmask(h, me, b"\x07" * 32, bytes(64)), self.key, self.chain_id)
                st.agg.add_unmask(um)
                await self.publish(um)

    agg._maybe_unmask = types.MethodType(wrong, agg)  # type: ignore[method-assign]


def _wrong_update(node: FakeNode) -> None:
    """The member's masked vector is not its committed model (one element off)."""
    prover = node.prover
    run = prover.run

    async def corrupted(job: Any, *, timeout: float) -> Any:
        out = await run(job, timeout=timeout)
        if isinstance(job, MaskVector):
            vector = bytearray(out.vector)
            vector[0] ^= 1
            out = dataclasses.replace(out, vector=bytes(vector))
        return out

    prover.run = corrupted  # type: ignore[method-assign]


def _false_pair(node: FakeNode) -> None:
    """The member masks with another key than the one its commit published: its update
    passes its own check, but every pair with it disagrees (a Dispute, whose reveals
    name it)."""
    prover = node.prover
    run = prover.run

    async def other_key(job: Any, *, timeout: float) -> Any:
        if isinstance(job, MaskVector):
            job = dataclasses.replace(job, secret=job.secret + 1)
        return await run(job, timeout=timeout)

    prover.run = other_key  # type: ignore[method-assign]


def _wrong_self_mask(node: FakeNode) -> None:
    """The member masks with another self seed than the one it secret-shares (and later
    unmasks): its update passes its own check and its seed opens its sharing, but the
    seed does not open its self-mask commitment, so the sum fails after every honest
    member unmasked (the round loses its aggregate: no second sum may be opened)."""
    prover = node.prover
    run = prover.run

    async def other_seed(job: Any, *, timeout: float) -> Any:
        out = await run(job, timeout=timeout)
        if isinstance(job, MaskVector):
            n = FAKE_PARAMS
            seed = masking.self_seed(job.secret.to_bytes(32, "big"), job.context)
            p, q = masking.expand(seed, n), masking.expand(sha256(seed), n)
            y = secagg.decode_vector(out.vector, n)
            y = [(a - b + c) % bn254.R for a, b, c in zip(y, p, q, strict=True)]
            out = dataclasses.replace(
                out,
                vector=secagg.encode_vector(y),
                self_commitment=bn254.compress(fake_linear(q)),
            )
        return out

    prover.run = other_seed  # type: ignore[method-assign]


def _unmask_before_update(node: FakeNode) -> None:
    """The member gossips an Unmask with a wrong seed just before its update (so nodes
    cannot check it yet) and never a right one: the pool drops it when the update comes
    (evidence), and the member's seed is recovered from the others' shares."""
    p = node.engine.participant
    assert p is not None and p.aggregation is not None
    agg = p.aggregation
    publish = agg.publish

    async def early(item: Any) -> None:
        if isinstance(item, MaskedUpdate):
            um = Unmask(item.selection, item.member, b"\x07" * 32, bytes(64))
            await publish(sign(um, agg.key, agg.chain_id))
            await trio.sleep(0.2)  # every node holds the Unmask before the update
        await publish(item)

    async def never(self: Any, st: RoundState, mine: Mine) -> None:
        return None

    agg.ctx = dataclasses.replace(agg.ctx, publish=early)  # this member's only
    agg._maybe_unmask = types.MethodType(never, agg)  # type: ignore[method-assign]


STRATEGIES = {
    "wrong-seed": _unmask_with_a_wrong_seed,
    "silent-after-complete": _silent_after_update,
    "wrong-update": _wrong_update,
    "false-pair": _false_pair,
    "wrong-self-mask": _wrong_self_mask,
    "unmask-before-update": _unmask_before_update,
}
PROVEN = set(STRATEGIES) - {"silent-after-complete"}  # leave evidence


@pytest.mark.parametrize("strategy", list(STRATEGIES))
async def test_one_cheating_member_every_round_costs_at_most_one_aggregate(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, strategy: str
) -> None:
    """Bounded griefing: a selected member plays one strategy in every round. A silent
    member's seed is recovered; a wrong seed is refused and recovered too; a wrong update
    is dropped by a new attempt, a false pair commitment by a Dispute whose reveal names
    it; a self mask its seed does not open spoils the sum once. Every strategy but
    silence leaves evidence, a block carries it and the cheat is then not selected for
    exclusion_rounds; at most one round loses its aggregate, and only the cheat is ever
    named."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, _sent):
        cheat = nodes[2]
        STRATEGIES[strategy](cheat)
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 7 for n in nodes[:2]), 900)
        blocks = canonical(nodes[1])[:7]
    lost = [b.round for b in blocks[1:] if not b.members]
    assert len(lost) <= (1 if strategy == "wrong-self-mask" else 0), f"rounds {lost} lost"
    named = [
        (b.round, evidence.offence(chain.genesis, chain.chain_id, ev).key)
        for b in blocks
        for ev in b.evidence
    ]
    assert {key for _, key in named} <= {cheat.key.public}, named
    if strategy in PROVEN:
        assert named, "no block carried the evidence"
        first = named[0][0]
        for b in blocks:
            if first < b.round <= first + chain.genesis.rule.exclusion_rounds:
                assert cheat.key.public not in b.members, f"round {b.round} selected the cheat"


async def test_gossiped_evidence_is_relayed_only_when_its_check_proves_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A wrong update's evidence, found by the aggregator, reaches every node by gossip
    (each answered its check in the worker pool before relaying it); the same kind
    quoting an honest member's update is refuted by its check and REJECTed (its sender
    lied), so nobody carries it."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, sent):
        cheat = nodes[2]
        _wrong_update(cheat)
        _start(nursery, nodes)
        await until(lambda: any(b.evidence for b in canonical(nodes[1])), 600)
        honest = nodes[1].key.public
        sel = next(
            m for m in sent if isinstance(m, Selection) and honest in m.members and m.attempt == 0
        )
        upd = next(
            m
            for m in sent
            if isinstance(m, MaskedUpdate) and m.selection == sel.hash() and m.member == honest
        )
        commit = next(
            m
            for m in sent
            if isinstance(m, CommitTx) and m.hash() in sel.proofs and m.participant == honest
        )
        proof = next(m for m in sent if isinstance(m, ProofTx) and m.commit_id == commit.hash())
        forged = evidence.bad_update(sel, commit, proof.commitment, upd)
        verdict = await nodes[3].engine._validate_round(
            forged, forged.encode(), nodes[1].net.peer_id
        )
        assert verdict is Verdict.REJECT
        pools = [n.engine.evidence.pending for n in nodes[1:]]
    assert all(honest not in pool for pool in pools)
    proven = [m for m in sent if isinstance(m, Evidence) and m.kind == BAD_UPDATE]
    assert proven and all(
        evidence.offence(chain.genesis, chain.chain_id, ev).key == cheat.key.public for ev in proven
    )


async def test_proofs_after_the_proof_deadline_still_aggregate(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A busy machine: every proof finishes after both proposers' turns (6 and 7 s into
    a 10 s round): ranks 1 and 2 first, then rank 4, then rank 3. Proposers wait until
    the proofs they hold can make an aggregate and then go in rank order one fallback
    apart, so the rounds still aggregate. Fails without the wait: rank 1 held only its
    own proof, rank 2 two (too few members) and ranks 3 and 4 never propose, so every
    block kept the parent's model."""
    chain = _chain()
    late = [7.0, 7.1, 7.3, 7.2]
    async with agg_net(tmp_path, chain, late, [4, 3, 2, 1]) as (_, nodes, nursery, _s):
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 3 for n in nodes), 300)
        blocks = canonical(nodes[1])[:3]
    assert all(b.members for b in blocks), [(b.round, len(b.members)) for b in blocks]


def _false_shares(node: FakeNode) -> None:
    """Whenever the honest policy says to reveal a share of a silent member's seed, the
    member reveals one that is off by one (trying to stop the recovery)."""
    p = node.engine.participant
    assert p is not None and p.aggregation is not None
    agg = p.aggregation

    async def false(self: Any, st: RoundState, mine: Mine) -> int | None:
        h = st.agg.unmasked
        if h is None or h not in st.agg.completes:
            return None
        me, sel = self.key.public, st.agg.selections[h]
        updates = st.agg.updates.get(h, {})
        decision = aggpolicy.shares_to_reveal(
            me,
            sel,
            st.agg.completes[h],
            updates,
            set(st.agg.unmasks.get(h, {})),
            set(),
            h,
            False,
            {o for o, by in st.agg.shares.get(h, {}).items() if me in by},
            st.agg.complete_ms[h],
            self.clock(),
            self.genesis.timing.fallback_ms // 2,
        )
        for owner in decision.owners:
            upd = updates[owner]
            share = SeedShare(h, me, owner, upd.hash(), (12345).to_bytes(32, "big"), bytes(64))
            share = sign(share, self.key, self.chain_id)
            st.agg.add_share(share)
            await self.publish(share)
        return decision.until_ms

    agg._maybe_share = types.MethodType(false, agg)  # type: ignore[method-assign]


async def test_a_false_share_costs_at_most_one_aggregate_per_exclusion_period(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The best-ranked member is silent after its vector every round; a second member
    reveals false shares of its seed, so the first such round cannot recover it (one
    valid share of t = 2). The false share is evidence: the liar is excluded for 4
    rounds, in which the silent member's seed is recovered from the honest shares."""
    chain = _chain()
    async with agg_net(tmp_path, chain) as (_, nodes, nursery, _sent):
        _silent_after_update(nodes[1])
        liar = nodes[2]
        _false_shares(liar)
        _start(nursery, nodes)
        await until(lambda: all(len(canonical(n)) >= 6 for n in nodes[3:]), 600)
        blocks = canonical(nodes[3])[:6]
    e = chain.genesis.rule.exclusion_rounds
    named = [
        (b.round, evidence.offence(chain.genesis, chain.chain_id, ev).key)
        for b in blocks
        for ev in b.evidence
    ]
    assert named and {key for _, key in named} == {liar.key.public}, named
    first = named[0][0]  # the block that carried the evidence
    lost = [b.round for b in blocks if not b.members]
    # at most one lost aggregate per exclusion period (the offence's own round)
    assert len(lost) <= 1 + len(blocks) // (e + 1), lost
    for b in blocks:
        if first < b.round <= first + e:
            assert b.members and liar.key.public not in b.members, b.round


def _big_update(chain: Chain, sel: Selection, n: int) -> tuple[MaskedUpdate, tuple[bytes, ...]]:
    """A member's signed update of an n-element vector (v7: in parts), and its parts' data."""
    m = sel.members[0]
    secrets = {k: secagg.mask_secret(bytes([i + 1]) * 32) for i, k in enumerate(sel.members)}
    others = [(o, secagg.mask_public(secrets[o])) for o in secagg.others_of(sel.members, m)]
    t = secagg.threshold(3, len(sel.members))
    masks = secagg.member_masks(secrets[m], m, others, sel.hash(), 4, t)
    whole = secagg.encode_vector(list(range(n)))
    pairs = (secagg.mask_public(5),) * len(others)
    unsigned = secagg.unsigned_update(sel.hash(), m, whole, pairs, secagg.mask_public(6), masks)
    header, rest = secagg.split_update(unsigned)
    return sign(header, chain.key_of(m), chain.chain_id), rest


async def test_a_vector_part_validated_before_its_update_waits_for_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """v7: py-libp2p validates each gossip message in a task of its own, and trio may run
    a member's update and its part in either order. A part that comes first waits, a
    bounded while, for its update and is then relayed; a part whose update never comes
    is ignored (no penalty), and one that is not the part its update signed is refused."""
    chain = _chain()
    n = secagg.PART_LEN + 4
    g = dataclasses.replace(
        chain.genesis, aggregation=dataclasses.replace(chain.genesis.aggregation, parameters=n)
    )
    clock = clock_at(g.timing.genesis_ms)
    async with trio.open_nursery() as nursery:
        node = make_node(FakeNetwork(nursery), chain, chain.publisher, tmp_path, clock)
        pool = node.engine.pool
        pool.genesis = g  # a model of two parts; the rest of the chain is as it was
        members = tuple(sorted(k.public for k in chain.participants[:3]))
        proposer = chain.key_of(members[0])
        sel = sign(
            Selection(0, chain.chain_id, proposer.public, 0, (b"\x01" * 32,), members, bytes(64)),
            proposer,
            chain.chain_id,
        )
        st = pool.state(0)
        assert st.agg.add_selection(sel, clock())
        upd, rest = _big_update(chain, sel, n)
        (part,) = secagg.vector_parts(upd, rest)
        peer = peer_id_of_key(chain.participants[3].public)
        verdicts: list[Verdict] = []

        async def validate_part(p: VectorPart) -> None:
            verdicts.append(await pool.validate(p, peer))

        start = trio.current_time()
        nursery.start_soon(validate_part, part)
        await trio.sleep(0.5)
        assert verdicts == []  # waiting for its update
        assert await pool.validate(upd, peer) is Verdict.ACCEPT
        await until(lambda: bool(verdicts), 5)
        assert verdicts == [Verdict.ACCEPT] and trio.current_time() - start < 1
        assert set(st.agg.whole(sel.hash())) == {upd.member}
        # a part of an update that never comes: ignored once the wait is over
        orphan = dataclasses.replace(part, update=bytes(32))
        assert await pool.validate(orphan, peer) is Verdict.IGNORE
        assert trio.current_time() - start >= 2
        # data that is not the signed part: refused (its forwarder is penalised)
        forged = dataclasses.replace(part, data=part.data[::-1])
        assert await pool.validate(forged, peer) is Verdict.REJECT
        nursery.cancel_scope.cancel()
    node.chain.store.close()
