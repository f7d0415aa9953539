"""The best-share rule's block validity, as pure functions: real BN254 commitments over a
toy basis (B_j = (j+2)*G, K = 99*G) stand in for the circuit's, so every check of the
aggregate runs for real: a valid aggregate scores its model's k; an M or R off by one
in one weight, a member the rule does not select, a resubmitted parent, too few
members and a keep-parent block that changes the model are refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from consensus import aggregate, blocks, bn254, optimizer, rules
from consensus.blocks import ParentInfo
from consensus.checks import ServerStep
from consensus.commitment import commit
from consensus.crypto import sha256
from consensus.errors import InvalidError
from consensus.rules import sign
from consensus.strategy import KEEP_PARENT_SCORE
from consensus.types import AggregationSpec, Block, CommitTx, ProofTx, RuleSpec
from support import plaincheck
from support.chainfactory import Chain, hash_proof, hash_verify, make_chain, mask_key_for

BASIS = [bn254.mul(bn254.G, j + 2) for j in range(4)]
K = bn254.mul(bn254.G, 99)


def blob(k: int, q: list[int]) -> bytes:
    """A toy model: its k on every batch, then its parameters as signed bytes."""
    return bytes([k]) + bytes(v & 0xFF for v in q)


def params(model: bytes) -> list[int]:
    return [v - 256 if v > 127 else v for v in model[1:]]


def c_of(model: bytes) -> bytes:
    return bn254.compress(commit(BASIS, K, params(model)))


def commit_aggregate(model: bytes, remainder: bytes, weight_sum: int) -> bytes:
    total = [weight_sum * m + r for m, r in zip(params(model), remainder, strict=True)]
    return bn254.compress(commit(BASIS, K, total))


PARENT = blob(2, [1, 1, 1, 1])


@pytest.fixture
def chain() -> Chain:
    base = make_chain(n=5)
    g = dataclasses.replace(
        base.genesis,
        initial_model_hash=sha256(PARENT),
        rule=RuleSpec("best-share", 50, 3, 16),
        aggregation=AggregationSpec(6, 4, sha256(b"basis"), bn254.compress(K)),
    )
    rules.check_genesis(g)
    return Chain(base.participants, base.publisher, g, base.batches)


def _block(
    chain: Chain, models: list[bytes], ks: list[int], members: list[int] | None = None
) -> tuple[Block, bytes, list[bytes]]:
    """A signed best-share block of round 0 on the genesis: participant i proves ks[i]
    for models[i]; the rank-1 proposer aggregates `members` (default: the rule's)."""
    commits: dict[int, CommitTx] = {}
    proofs: dict[int, ProofTx] = {}
    reveal_batch = chain.batches[0]
    for i, m in enumerate(models):
        who = chain.participants[i]
        c = c_of(m)
        binding = rules.commit_binding(chain.chain_id, who.public, 0, chain.chain_id, c)
        commits[i] = sign(
            CommitTx(
                0,
                chain.chain_id,
                who.public,
                binding,
                mask_key=mask_key_for(who.public, 0),
                signature=bytes(64),
            ),
            who,
            chain.chain_id,
        )
    reveal = chain.reveal(0, [c.hash() for c in commits.values()])
    for i, m in enumerate(models):
        who = chain.participants[i]
        c = c_of(m)
        tx = ProofTx(
            0,
            commits[i].hash(),
            who.public,
            c,
            ks[i],
            hash_proof(reveal_batch, c, ks[i]),
            bytes(64),
        )
        proofs[i] = sign(tx, who, chain.chain_id)
    ranking = rules.rank_proofs(reveal.batch, proofs.values())
    order = [next(i for i in proofs if proofs[i].participant == r.participant) for r in ranking]
    if members is None:
        fresh = [i for i in order if c_of(models[i]) != c_of(PARENT)]
        members = fresh[: max(3, -(-len(fresh) // 2))]
    keys = sorted(chain.participants[i].public for i in members)
    idx = {chain.participants[i].public: i for i in members}
    mean, rest = aggregate.weighted_mean([params(models[idx[k]]) for k in keys], [1] * len(keys))
    model = blob(4, mean)
    proposer = chain.participants[order[0]]
    block = Block(
        0,
        chain.chain_id,
        1,
        proposer.public,
        1,
        reveal,
        tuple(sorted(commits.values(), key=lambda c: c.hash())),
        tuple(sorted(proofs.values(), key=lambda p: p.commit_id)),
        sha256(model),
        members=tuple(keys),
        remainder=bytes(rest),
        signature=bytes(64),
    )
    return sign(block, proposer, chain.chain_id), model, keys


def _check(chain: Chain, block: Block, model: bytes) -> int:
    parent = ParentInfo(chain.chain_id, -1, 0, sha256(PARENT))
    return plaincheck.check_block(
        chain.genesis,
        chain.chain_id,
        parent,
        block,
        model,
        hash_verify,
        c_of,
        lambda m, _b: m[0],
        parent_model=PARENT,
        commit_aggregate=commit_aggregate,
    )


KS = [4, 3, 3, 2, 1]  # proven k on the 4-example batch
MODELS = [blob(k, [k + i, -k, 3 * k - i, 5]) for i, k in enumerate(KS)]


def resign(chain: Chain, block: Block, **changes: object) -> Block:
    return sign(dataclasses.replace(block, **changes), chain.key_of(block.proposer), chain.chain_id)


def test_a_valid_aggregate_scores_its_model_s_k(chain: Chain) -> None:
    block, model, members = _block(chain, MODELS, KS)
    assert len(members) == 3  # the best half of 5, but never fewer than 3
    assert _check(chain, block, model) == 4


def test_an_aggregate_off_by_one_is_refused(chain: Chain) -> None:
    block, model, _ = _block(chain, MODELS, KS)
    q = params(model)
    q[2] += 1
    off = blob(4, q)
    with pytest.raises(InvalidError, match="aggregate does not match"):
        _check(chain, resign(chain, block, model_hash=sha256(off)), off)
    rest = bytearray(block.remainder)
    rest[0] = (rest[0] + 1) % 3
    with pytest.raises(InvalidError, match="aggregate does not match"):
        _check(chain, resign(chain, block, remainder=bytes(rest)), model)


def test_members_must_be_the_rule_s_and_enough(chain: Chain) -> None:
    block, model, _ = _block(chain, MODELS, KS, members=[0, 1, 4])  # 4 ranks last
    with pytest.raises(InvalidError, match="not one the rule selects"):
        _check(chain, block, model)
    block, model, _ = _block(chain, MODELS, KS, members=[0, 1])
    with pytest.raises(InvalidError, match="at least 3"):
        _check(chain, block, model)


def test_a_resubmitted_parent_is_never_selected(chain: Chain) -> None:
    models = [PARENT, *MODELS[1:]]
    ks = [4, *KS[1:]]  # the free-rider even ranks first on the batch
    block, model, members = _block(chain, models, ks)
    assert chain.participants[0].public not in members
    assert _check(chain, block, model) == 4
    forced, fmodel, _ = _block(chain, models, ks, members=[0, 1, 2])
    with pytest.raises(InvalidError, match="not one the rule selects"):
        _check(chain, forced, fmodel)


def test_a_block_without_members_keeps_the_parent_s_model(chain: Chain) -> None:
    block, _, _ = _block(chain, MODELS, KS)
    keep = resign(chain, block, members=(), remainder=b"", model_hash=sha256(PARENT))
    # v4: a keep-parent block weighs KEEP_PARENT_SCORE whatever the parent scores (it
    # scores 2 here): any aggregate of the round outweighs it
    assert _check(chain, keep, PARENT) == KEEP_PARENT_SCORE == 1
    other = resign(chain, keep, model_hash=sha256(MODELS[0]))
    with pytest.raises(InvalidError, match="keeps the parent's model"):
        _check(chain, other, MODELS[0])


def test_any_aggregate_outweighs_a_keep_parent_sibling(chain: Chain) -> None:
    """Attack 3 of the v2 review: a cheap keep-parent block (even carrying only its own
    k = 0 proof) scored max(1, k(parent)) and could beat a poor aggregate. v4: an
    aggregate whose model classifies one example weighs 2, a keep-parent block 1."""
    models = [blob(1, [1 + i, 2, 3, 4]) for i in range(5)]
    block, model, _ = _block(chain, models, [1, 1, 1, 1, 1])
    model = blob(1, params(model))  # its mean classifies one example
    agg = resign(chain, block, model_hash=sha256(model))
    keep = resign(chain, block, members=(), remainder=b"", model_hash=sha256(PARENT))
    assert _check(chain, agg, model) == 2 > _check(chain, keep, PARENT)


def test_an_aggregate_rests_on_at_least_half_the_sealed_commits(chain: Chain) -> None:
    """A subset aggregate: the proposer carries 3 of the 7 sealed commits' proofs so the
    rule selects the members it wants; refused (at least half must be carried)."""
    block, model, members = _block(chain, MODELS, KS)
    mine = {p.participant for p in block.proofs if p.participant in members}
    carried = tuple(p for p in block.proofs if p.participant in mine)
    commits = tuple(c for c in block.commits if c.participant in mine)
    extra = [
        chain.commit(chain.participants[i], 0, chain.chain_id, MODELS[i]).hash() for i in (3, 4)
    ]
    sealed = [c.hash() for c in block.commits] + extra
    reveal = chain.reveal(0, sealed)  # 7 sealed, 3 carried
    thin = resign(chain, block, reveal=reveal, commits=commits, proofs=carried)
    with pytest.raises(InvalidError, match="fewer than half"):
        _check(chain, thin, model)


# --- protocol v6: the server optimizer and the guard ----------------------------------

MOMENTUM = RuleSpec(
    "best-share", 50, 3, 16, server="momentum", momentum_num=7, momentum_den=10, velocity_scale=256
)
PARENT_V = optimizer.encode_velocity([256 * 3, -256, 0, 512])  # a parent's velocity


def _on(chain: Chain, rule: RuleSpec) -> Chain:
    g = dataclasses.replace(chain.genesis, rule=rule)
    rules.check_genesis(g)
    return Chain(chain.participants, chain.publisher, g, chain.batches)


def toy_step(check: ServerStep, blobs: Mapping[bytes, bytes]) -> bool:
    """The ServerStep check on toy blobs (as prover.aggregation.check_step on real ones)."""
    g = params(blobs[check.parent_model])
    v = optimizer.decode_velocity(blobs.get(check.parent_velocity, b""), len(g))
    m = optimizer.Momentum(check.beta_num, check.beta_den, check.scale)
    g2, v2 = optimizer.step(g, v, params(blobs[check.aggregate]), m)
    return params(blobs[check.model]) == g2 and blobs[check.velocity] == optimizer.encode_velocity(
        v2
    )


def _stepped(chain: Chain, block: Block, mean: bytes, k: int = 4) -> tuple[Block, list[bytes]]:
    """The block with its aggregate moved to `aggregate_hash` and the step's G' (scoring
    k) and V' from PARENT and PARENT_V as its model and velocity."""
    m = optimizer.server_of(chain.genesis.rule)
    assert m is not None
    g2, v2 = optimizer.step(params(PARENT), optimizer.decode_velocity(PARENT_V, 4), params(mean), m)
    model, velocity = blob(k, g2), optimizer.encode_velocity(v2)
    changed = resign(
        chain,
        block,
        model_hash=sha256(model),
        aggregate_hash=sha256(mean),
        velocity_hash=sha256(velocity),
    )
    return changed, [model, mean, velocity]


def _check_v6(chain: Chain, block: Block, own: list[bytes], parent_v: bytes = PARENT_V) -> int:
    parent = ParentInfo(chain.chain_id, -1, 0, sha256(PARENT), velocity_hash=sha256(parent_v))
    pending = blocks.on_block(chain.genesis, chain.chain_id, parent, block)
    found = {sha256(b): b for b in [*own, PARENT, parent_v]}
    answers = plaincheck.answer_with(
        pending.checks,
        found,
        hash_verify,
        c_of,
        lambda m, _b: m[0],
        commit_aggregate,
        server_step=toy_step,
    )
    return blocks.conclude(pending, answers)


def test_a_momentum_block_carries_the_step_of_the_parent_s_model_and_velocity(
    chain: Chain,
) -> None:
    chain = _on(chain, MOMENTUM)
    plain, mean, _ = _block(chain, MODELS, KS)
    block, own = _stepped(chain, plain, mean, k=3)
    assert params(own[0]) != params(mean)  # the velocity carried the step further
    assert _check_v6(chain, block, own) == 3  # the score is G''s k, not M's
    # G' off by one, V' off by one, or plain averaging: refused
    off = params(own[0])
    off[1] += 1
    wrong_g = blob(3, off)
    with pytest.raises(InvalidError, match="server optimizer's step"):
        _check_v6(chain, resign(chain, block, model_hash=sha256(wrong_g)), [wrong_g, *own[1:]])
    v = optimizer.decode_velocity(own[2], 4)
    v[0] += 1
    wrong_v = optimizer.encode_velocity(v)
    with pytest.raises(InvalidError, match="server optimizer's step"):
        _check_v6(chain, resign(chain, block, velocity_hash=sha256(wrong_v)), [*own[:2], wrong_v])
    averaged = resign(chain, block, model_hash=sha256(mean))
    with pytest.raises(InvalidError, match="server optimizer's step"):
        _check_v6(chain, averaged, own)
    # the aggregate itself is still checked against the members' commitments
    m_off = params(mean)
    m_off[0] += 1
    wrong_m = blob(4, m_off)
    with pytest.raises(InvalidError, match="aggregate does not match"):
        _check_v6(chain, *_stepped(chain, plain, wrong_m))


def test_a_keep_parent_block_keeps_the_velocity_too(chain: Chain) -> None:
    chain = _on(chain, MOMENTUM)
    plain, mean, _ = _block(chain, MODELS, KS)
    keep = resign(
        chain,
        plain,
        members=(),
        remainder=b"",
        model_hash=sha256(PARENT),
        velocity_hash=sha256(PARENT_V),
    )
    assert _check_v6(chain, keep, [PARENT, PARENT_V]) == KEEP_PARENT_SCORE
    zeroed = resign(chain, keep, velocity_hash=b"")
    with pytest.raises(InvalidError, match="keeps the parent's velocity"):
        _check_v6(chain, zeroed, [PARENT])
    with pytest.raises(InvalidError, match="carries no aggregate"):
        _check_v6(chain, resign(chain, keep, aggregate_hash=sha256(mean)), [PARENT, mean])


def test_blocks_name_the_blobs_their_optimizer_needs(chain: Chain) -> None:
    plain, mean, _ = _block(chain, MODELS, KS)
    with pytest.raises(InvalidError, match="names no M or V blob"):
        _check(chain, resign(chain, plain, velocity_hash=sha256(b"v")), mean)
    chain = _on(chain, MOMENTUM)
    plain, mean, _ = _block(chain, MODELS, KS)
    with pytest.raises(InvalidError, match="names M's and V's blobs"):
        _check_v6(chain, plain, [mean])  # a v4 block on a v6 chain


def test_the_guard_drops_models_scoring_exactly_the_parent_s_k() -> None:
    """Eight proofs, best half = 4; two of the selected score the parent's k (2): the
    guard leaves the worse-ranked of them out, keeping 3 (guard_members)."""
    base = make_chain(n=8)
    g = dataclasses.replace(
        base.genesis,
        initial_model_hash=sha256(PARENT),
        rule=dataclasses.replace(MOMENTUM, guard_members=3),
        aggregation=AggregationSpec(6, 4, sha256(b"basis"), bn254.compress(K)),
    )
    rules.check_genesis(g)
    chain = Chain(base.participants, base.publisher, g, base.batches)
    ks = [4, 3, 2, 2, 1, 1, 1, 1]
    models = [blob(k, [k + i, -k, 3 * k - i, 5]) for i, k in enumerate(ks)]
    full, mean4, members4 = _block(chain, models, ks)
    assert len(members4) == 4
    with pytest.raises(InvalidError, match="not one the rule selects"):
        _check_v6(chain, *_stepped(chain, full, mean4))
    ranked = rules.rank_proofs(chain.batches[0], full.proofs)
    worst_tie = [r.participant for r in ranked if r.k == 2][-1]
    keep = [i for i in range(8) if chain.participants[i].public in members4]
    keep.remove(next(i for i in keep if chain.participants[i].public == worst_tie))
    guarded, mean3, _ = _block(chain, models, ks, members=keep)
    assert _check_v6(chain, *_stepped(chain, guarded, mean3)) >= 2


def test_a_genesis_states_a_server_step_and_guard_it_can_run(chain: Chain) -> None:
    bad = [
        (dataclasses.replace(MOMENTUM, server="adam"), "server must be one of"),
        (dataclasses.replace(MOMENTUM, momentum_num=10), "beta_num < beta_den"),
        (dataclasses.replace(MOMENTUM, guard_members=2), "below min_members"),
    ]
    for rule, why in bad:
        with pytest.raises(InvalidError, match=why):
            rules.check_genesis(dataclasses.replace(chain.genesis, rule=rule))
    winner = dataclasses.replace(make_chain(n=3).genesis.rule, server="momentum", momentum_den=10)
    with pytest.raises(InvalidError, match="no aggregate for a server step"):
        rules.check_genesis(dataclasses.replace(make_chain(n=3).genesis, rule=winner))
