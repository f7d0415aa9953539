"""Private aggregation on a real circuit: ezkl's kzg_commit is the commitment formula,
masked vectors check against their members' real commitments, the unmasked sum is
the exact integer mean, and the block's aggregate check holds for it and fails for
an M or R off by one (prover.aggregation, consensus.secagg, consensus.aggregate)."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from consensus import aggregate, bn254, commitment, masking, optimizer, secagg
from consensus.errors import InvalidError
from consensus.types import RuleSpec
from node.daemon import check_aggregation_spec
from node.home import Home, HomeError
from prover import aggregation, circuit, jobs
from prover.models import build_model, model_to_bytes, param_shapes
from prover.quant import quantise_params
from support.chainfactory import make_chain

pytestmark = pytest.mark.slow  # real ezkl circuits and commitments: not in the fast tier

ARCH = "digits-mlp"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("agg")
    jobs.build_circuit(ARCH, 4, str(out), 1, 13, None)
    return str(out)


def test_kzg_commit_is_the_formula(artifacts: str) -> None:
    m = circuit.Manifest.load(Path(artifacts))
    shapes = [s for _, s in param_shapes(ARCH)]
    srs = (Path(artifacts) / circuit.SRS).read_bytes()
    b, k_point = commitment.basis(
        srs, shapes, m.input_scale, m.param_scale, commitment.UNUSABLE_ROWS
    )
    rng = random.Random(3)
    v = [rng.randrange(bn254.R) for _ in b]
    assert aggregation.commit_vector(artifacts, ARCH, v) == commitment.commit(b, k_point, v)
    assert aggregation.constant(artifacts, ARCH) == k_point
    spec = aggregation.spec(artifacts, ARCH, commitment.UNUSABLE_ROWS)
    assert spec.parameters == len(b)
    assert spec.constant == bn254.compress(k_point)
    assert spec.basis_hash == commitment.basis_hash(b, k_point)


def _members(n: int) -> list[tuple[bytes, int, bytes]]:
    """(key, mask secret, trained-like weights) per member, keys sorted."""
    out = []
    for i in range(n):
        secret = secagg.mask_secret(os.urandom(32))
        out.append((bytes([i + 1]) * 32, secret, model_to_bytes(build_model(ARCH, 10 + i))))
    return out


def test_the_commit_job_by_the_formula_equals_the_witness_commitment(artifacts: str) -> None:
    """jobs.commit takes the formula (kzg_commit) path for a one-column circuit: it must
    give exactly the commitment ezkl's witness gives, the one proofs carry."""
    m = circuit.Manifest.load(Path(artifacts))
    for seed in (3, 4, 5):
        net = build_model(ARCH, seed)
        q = quantise_params(list(net.parameters()), m.param_scale)
        witness_c = circuit.commit(Path(artifacts), net, q)
        assert jobs.commit(artifacts, ARCH, model_to_bytes(net)) == witness_c


def test_masked_round_gives_the_exact_mean_and_the_block_check(artifacts: str) -> None:
    members = _members(3)
    keys = [k for k, _, _ in members]
    publics = {k: secagg.mask_public(s) for k, s, _ in members}
    context = b"\x42" * 32
    commitments = {k: circuit_commit(artifacts, w) for k, _, w in members}
    updates, seeds = [], []
    for key, secret, weights in members:
        others = [(o, publics[o]) for o in secagg.others_of(keys, key)]
        upd = aggregation.mask_update(artifacts, ARCH, weights, 1, secret, key, others, context, 2)
        signs = [masking.pair_sign(key, o) for o, _ in others]
        assert aggregation.check_update(artifacts, ARCH, commitments[key], 1, upd, signs)
        # a vector that is not the committed model is caught, alone
        bad = bytearray(upd.vector)
        bad[0] ^= 1
        forged = dataclasses.replace(upd, vector=bytes(bad))
        assert not aggregation.check_update(artifacts, ARCH, commitments[key], 1, forged, signs)
        updates.append(upd)
        seeds.append(masking.self_seed(secret.to_bytes(32, "big"), context))
        assert aggregation.self_seed_matches(artifacts, ARCH, upd.self_commitment, seeds[-1])
    by_member = {u.member: u for u in updates}
    assert secagg.disputed_pairs(by_member, keys) == []
    self_cs = [u.self_commitment for u in updates]
    vectors = [u.vector for u in updates]
    with pytest.raises(InvalidError, match=f"member {keys[1].hex()[:16]}'s self seed"):
        wrong = [seeds[0], b"\x00" * 32, seeds[2]]
        aggregation.aggregate(artifacts, ARCH, keys, vectors, wrong, self_cs, 3)
    blob, rest = aggregation.aggregate(artifacts, ARCH, keys, vectors, seeds, self_cs, len(keys))
    qs = [aggregation.params_of(artifacts, ARCH, w) for _, _, w in members]
    want_mean, want_rest = aggregate.weighted_mean(qs, [1, 1, 1])
    assert aggregation.exact_params(artifacts, ARCH, blob) == want_mean
    assert list(rest) == want_rest
    # no single masked vector reveals its model: y_i - a_i*q_i is a full-size mask
    assert secagg.decode_vector(updates[0].vector, len(qs[0]))[:50] != masking.to_field(qs[0][:50])

    points = [bn254.decompress(commitments[k]) for k in keys]
    k_point = aggregation.constant(artifacts, ARCH)
    total = bn254.decompress(aggregation.commit_aggregate(artifacts, ARCH, blob, rest, 3))
    aggregate.check_sum(points, [1, 1, 1], k_point, total)

    off = list(want_mean)
    off[7] += 1
    off_blob = aggregation.model_blob(artifacts, ARCH, off)
    bad_total = bn254.decompress(aggregation.commit_aggregate(artifacts, ARCH, off_blob, rest, 3))
    with pytest.raises(InvalidError, match="aggregate does not match"):
        aggregate.check_sum(points, [1, 1, 1], k_point, bad_total)
    rest_off = bytearray(rest)
    rest_off[3] = (rest_off[3] + 1) % 3
    bad_rest = bn254.decompress(
        aggregation.commit_aggregate(artifacts, ARCH, blob, bytes(rest_off), 3)
    )
    with pytest.raises(InvalidError, match="aggregate does not match"):
        aggregate.check_sum(points, [1, 1, 1], k_point, bad_rest)


def test_the_server_step_on_real_model_blobs(artifacts: str) -> None:
    """v6: the step the aggregator makes and the check every node runs, on real blobs;
    from zero velocity the step is the aggregate, then the velocity carries it further."""
    m = optimizer.Momentum(7, 10, 256)
    parent = model_to_bytes(build_model(ARCH, 1))  # float weights, as a genesis model
    g = aggregation.params_of(artifacts, ARCH, parent)
    mean = aggregation.model_blob(artifacts, ARCH, [x + 3 for x in g])
    model, velocity = aggregation.step_blobs(artifacts, ARCH, parent, b"", mean, m)
    g1 = aggregation.exact_params(artifacts, ARCH, model)
    assert g1 == [x + 3 for x in g]
    assert optimizer.decode_velocity(velocity, len(g)) == [256 * 3] * len(g)
    mean2 = aggregation.model_blob(artifacts, ARCH, [x + 3 for x in g1])
    model2, velocity2 = aggregation.step_blobs(artifacts, ARCH, model, velocity, mean2, m)
    # V' = rdiv(7 * 768, 10) + 256 * 3 = 1306, G' = G + rdiv(1306, 256) = G + 5
    assert aggregation.exact_params(artifacts, ARCH, model2) == [x + 5 for x in g1]
    args = (artifacts, ARCH, model, velocity, mean2, m)
    assert aggregation.check_step(*args, model2, velocity2)
    assert not aggregation.check_step(*args, mean2, velocity2)  # plain averaging
    assert not aggregation.check_step(*args, model2, velocity)  # a stale velocity


def circuit_commit(artifacts: str, weights: bytes) -> bytes:
    return jobs.commit(artifacts, ARCH, weights)


def test_a_dropped_member_leaves_the_sum_masked(artifacts: str) -> None:
    """Without one member's vector the pairwise masks do not cancel: what remains
    is not the others' sum (and the silent member's model is never in any sum)."""
    members = _members(3)
    keys = [k for k, _, _ in members]
    publics = {k: secagg.mask_public(s) for k, s, _ in members}
    context = b"\x07" * 32
    vectors, seeds = [], []
    for key, secret, weights in members[:2]:
        others = [(o, publics[o]) for o in secagg.others_of(keys, key)]
        upd = aggregation.mask_update(artifacts, ARCH, weights, 1, secret, key, others, context, 2)
        vectors.append(upd.vector)
        seeds.append(masking.self_seed(secret.to_bytes(32, "big"), context))
    n = len(aggregation.params_of(artifacts, ARCH, members[0][2]))
    total = secagg.unmasked_sum([secagg.decode_vector(v, n) for v in vectors], seeds)
    qs = [aggregation.params_of(artifacts, ARCH, w) for _, _, w in members[:2]]
    assert total != [a + b for a, b in zip(*qs, strict=True)]


def test_a_pair_dispute_names_the_member_that_masked_with_another_key(artifacts: str) -> None:
    """A member that masks with another key than the one it published commits its masks
    consistently (its own vector check passes), but its partners disagree with it; one
    partner's revealed shared point (with its proof) names it, and only it."""
    members = _members(3)
    keys = [k for k, _, _ in members]
    publics = {k: secagg.mask_public(s) for k, s, _ in members}
    secrets = {k: s for k, s, _ in members}
    liar = keys[1]
    context = b"\x19" * 32
    got = {}
    for key, secret, weights in members:
        used = secret + 1 if key == liar else secret
        others = [(o, publics[o]) for o in secagg.others_of(keys, key)]
        upd = aggregation.mask_update(artifacts, ARCH, weights, 1, used, key, others, context, 2)
        signs = [masking.pair_sign(key, o) for o, _ in others]
        assert aggregation.check_update(
            artifacts, ARCH, circuit_commit(artifacts, weights), 1, upd, signs
        )
        got[key] = upd
    disputed = secagg.disputed_pairs(got, keys)
    assert disputed == sorted(secagg.pair_id(liar, k) for k in keys if k != liar)
    for pid in disputed:
        a, b = secagg.pair_of(pid)
        honest = a if b == liar else b
        reveal = secagg.reveal_pair(secrets[honest], honest, liar, publics[liar], context)
        assert secagg.reveal_holds(reveal, publics[honest], publics[liar])
        assert not secagg.reveal_holds(reveal, publics[liar], publics[honest])
        true = aggregation.mask_commitment(artifacts, ARCH, secagg.true_pair_seed(reveal))
        assert secagg.pair_commitment(got, keys, honest, liar) == true
        assert secagg.pair_commitment(got, keys, liar, honest) != true
        # the liar's own reveal is the same point: it cannot shift the blame
        own = secagg.reveal_pair(secrets[liar], liar, honest, publics[honest], context)
        assert own.shared == reveal.shared


class _Inline:
    """Runs a job in this process: the computation is real, only the pool is skipped."""

    async def run(self, job: Any, *, timeout: float) -> Any:
        return job.execute()


def test_a_node_refuses_a_genesis_whose_basis_its_srs_does_not_give(
    artifacts: str, tmp_path: Path
) -> None:
    home = Home(tmp_path / "home")
    home.path.mkdir()
    shutil.copytree(artifacts, home.artifacts)
    spec = aggregation.spec(artifacts, ARCH, commitment.UNUSABLE_ROWS)
    base = make_chain().genesis
    genesis = dataclasses.replace(
        base,
        task=dataclasses.replace(base.task, architecture=ARCH),
        rule=RuleSpec("best-share", 50, 3, 16),
        aggregation=spec,
    )
    trio.run(check_aggregation_spec, home, genesis, _Inline())
    forged = dataclasses.replace(spec, constant=bn254.compress(bn254.G))
    with pytest.raises(HomeError, match="does not give"):
        trio.run(
            check_aggregation_spec,
            home,
            dataclasses.replace(genesis, aggregation=forged),
            _Inline(),
        )
