"""The accuracy circuit with real ezkl proofs: correctness, binding, and the traps docs/circuit.md names.

A tiny circuit (digits-mlp-tiny, batch 4) keeps the suite fast; every proof here is real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from consensus import rules
from consensus.blocks import ParentInfo
from consensus.crypto import SigningKey, sha256
from consensus.errors import InvalidError
from consensus.merkle import merkle_proof, merkle_root
from consensus.rules import sign
from consensus.types import (
    Block,
    CommitTx,
    EvalBatch,
    EvalPlan,
    Genesis,
    ProofTx,
    Reveal,
    Task,
    Timing,
    chain_id,
)
from prover import circuit, jobs
from prover.client import Commit, Prove, Verified, Verify
from prover.models import build_model, model_from_bytes, model_to_bytes
from prover.quant import FixedPoint, QuantError, quantise_params
from prover.train import train_local
from prover.worker import worker_pool
from support import plaincheck

pytestmark = pytest.mark.slow  # real ezkl proofs: not in the fast tier

ARCH = "digits-mlp-tiny"
B = 4
FP = FixedPoint()


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("circuit")
    jobs.build_circuit(ARCH, B, str(out), 1, 13, None)
    return out


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    d = load_digits()
    return (d.data / 16).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="module")
def trained(digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> bytes:
    x, y = digits
    return train_local(
        ARCH,
        model_to_bytes(build_model(ARCH, 3)),
        x[:1200],
        y[:1200],
        epochs=3,
        batch_size=32,
        lr=0.1,
        seed=9,
    )


def batch_of(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], index: int = 0) -> EvalBatch:
    return jobs.make_eval_batch(index, x, y, FP.input_scale)


@pytest.fixture(scope="module")
def batches(digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> list[EvalBatch]:
    x, y = digits
    return [
        batch_of(x[1300 + B * i : 1300 + B * (i + 1)], y[1300 + B * i : 1300 + B * (i + 1)], i)
        for i in range(4)
    ]


@pytest.fixture(scope="module")
def proven(art: Path, trained: bytes, batches: list[EvalBatch]) -> tuple[int, bytes, bytes]:
    proved = jobs.prove(str(art), ARCH, trained, batches[0].encode())
    return proved.k, proved.proof, jobs.commit(str(art), ARCH, trained)


def test_manifest_pins_every_artifact_and_tampering_is_detected(art: Path) -> None:
    m = circuit.Manifest.load(art)
    circuit.check_hashes(art, m)
    settings = (art / circuit.SETTINGS).read_bytes()
    try:
        (art / circuit.SETTINGS).write_bytes(settings.replace(b"}", b" }", 1))
        with pytest.raises(circuit.CircuitError, match="does not match its pinned sha256"):
            circuit.check_hashes(art, m)
    finally:
        (art / circuit.SETTINGS).write_bytes(settings)


def test_a_trained_models_proof_verifies_and_k_is_the_plain_evaluators(
    art: Path, trained: bytes, batches: list[EvalBatch], proven: tuple[int, bytes, bytes]
) -> None:
    k, proof, c = proven
    assert k == jobs.evaluate(str(art), ARCH, trained, batches[0].encode())
    assert k >= 2  # a trained model gets most of the batch right
    assert len(proof) < 8 * 1024
    assert jobs.verify(str(art), proof, batches[0].encode(), c, k) == Verified(True, "")


def test_proof_does_not_verify_against_another_models_commitment(
    art: Path, proven: tuple[int, bytes, bytes]
) -> None:
    k, proof, _ = proven
    other = jobs.commit(str(art), ARCH, model_to_bytes(build_model(ARCH, 77)))
    v = jobs.verify(str(art), proof, _FIRST["b"], other, k)
    assert not v.ok and "committed weights" in v.reason


_FIRST: dict[str, bytes] = {}


@pytest.fixture(autouse=True)
def _remember_batch(batches: list[EvalBatch]) -> None:
    _FIRST["b"] = batches[0].encode()


def test_proof_does_not_verify_for_another_batch(
    art: Path, batches: list[EvalBatch], proven: tuple[int, bytes, bytes]
) -> None:
    k, proof, c = proven
    v = jobs.verify(str(art), proof, batches[1].encode(), c, k)
    assert not v.ok and "verifier" in v.reason


@pytest.mark.parametrize("delta", [-1, 1])
def test_proof_does_not_verify_for_another_k(
    art: Path, batches: list[EvalBatch], proven: tuple[int, bytes, bytes], delta: int
) -> None:
    k, proof, c = proven
    if not 0 <= k + delta <= B:
        pytest.skip("k at the edge")
    assert not jobs.verify(str(art), proof, batches[0].encode(), c, k + delta).ok


@pytest.mark.parametrize("pos", [0, 40, 70, 500, 3000, -1])
def test_flipped_proof_bytes_are_rejected_with_a_reason(
    art: Path, batches: list[EvalBatch], proven: tuple[int, bytes, bytes], pos: int
) -> None:
    k, proof, c = proven
    bad = bytearray(proof)
    bad[pos] ^= 0x01
    v = jobs.verify(str(art), bytes(bad), batches[0].encode(), c, k)
    assert not v.ok and v.reason


def test_truncated_or_garbage_proofs_are_rejected_not_crashing(
    art: Path, batches: list[EvalBatch], proven: tuple[int, bytes, bytes]
) -> None:
    k, proof, c = proven
    for junk in (proof[:100], proof[:-1], proof + b"\x00", c + b"\xff" * 5000):
        v = jobs.verify(str(art), junk, batches[0].encode(), c, k)
        assert not v.ok and v.reason


def test_a_model_with_all_equal_logits_scores_zero_and_cannot_claim_more(
    art: Path, batches: list[EvalBatch]
) -> None:
    net = build_model(ARCH, 5)
    with torch.no_grad():
        w, b = list(net.parameters())
        w.copy_(w[0].expand_as(w))  # identical rows: every class gets the same logit
        b.fill_(0.25)
    weights = model_to_bytes(net)
    batch = batches[2].encode()
    assert jobs.evaluate(str(art), ARCH, weights, batch) == 0
    proved = jobs.prove(str(art), ARCH, weights, batch)
    c = jobs.commit(str(art), ARCH, weights)
    assert proved.k == 0
    assert jobs.verify(str(art), proved.proof, batch, c, 0) == Verified(True, "")
    assert jobs.verify(str(art), proved.proof, batch, c, B).ok is False


async def test_a_model_with_a_zero_bias_proves_and_verifies_with_the_shared_keys(
    art: Path, batches: list[EvalBatch]
) -> None:
    """Exact zeros change ezkl's layout and hang `prove` (docs/circuit.md, Fixed point): the quantiser nudges them."""
    net = build_model(ARCH, 6)
    with torch.no_grad():
        list(net.parameters())[1].zero_()
    weights = model_to_bytes(net)
    assert model_from_bytes(ARCH, weights).state_dict()["0.bias"].abs().sum() == 0
    batch = batches[3].encode()
    async with worker_pool(1) as pool:  # a worker, so a regression hangs a process, not the suite
        proved = await pool.run(Prove(str(art), ARCH, weights, batch), timeout=300)
        c = await pool.run(Commit(str(art), ARCH, weights), timeout=120)
        verdict = await pool.run(Verify(str(art), proved.proof, batch, c, proved.k), timeout=120)
        assert verdict == Verified(True, "")


def test_in_circuit_k_equals_the_plain_evaluator_on_random_and_trained_models(
    art: Path, trained: bytes, digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    x, y = digits
    rng = np.random.default_rng(0)
    models = [model_to_bytes(build_model(ARCH, s)) for s in range(6)] + [trained]
    seen = set()
    for i, weights in enumerate(models):
        for _ in range(2):
            idx = rng.choice(len(x), B, replace=False)
            batch = batch_of(x[idx], y[idx]).encode()
            net = model_from_bytes(ARCH, weights)
            q = quantise_params(list(net.parameters()), FP.param_scale)
            xq, labels = jobs.decode_batch(EvalBatch.decode(batch), 64)
            in_circuit = circuit.circuit_k(art, net, q, xq, labels)
            assert in_circuit == jobs.evaluate(str(art), ARCH, weights, batch), f"model {i}"
            seen.add(in_circuit)
    assert len(seen) > 1  # the comparison covered different scores


def test_regenerated_proving_key_matches_the_pinned_vk(art: Path, tmp_path: Path) -> None:
    for name in (circuit.SETTINGS, circuit.COMPILED, circuit.SRS, circuit.MANIFEST, circuit.VK):
        (tmp_path / name).write_bytes((art / name).read_bytes())
    circuit.regenerate_pk(tmp_path)
    assert (tmp_path / circuit.PK).stat().st_size > 0
    m = circuit.Manifest.load(tmp_path)
    circuit.check_hashes(tmp_path, m)


def test_regenerating_with_another_srs_is_refused(art: Path, tmp_path: Path) -> None:
    import ezkl

    for name in (circuit.SETTINGS, circuit.COMPILED, circuit.MANIFEST, circuit.VK):
        (tmp_path / name).write_bytes((art / name).read_bytes())
    ezkl.gen_srs(str(tmp_path / circuit.SRS), 13)
    with pytest.raises(circuit.CircuitError, match=r"srs|SRS|sha256"):
        circuit.regenerate_pk(tmp_path)


def test_a_graph_with_a_float_constant_is_refused(tmp_path: Path) -> None:
    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x) * 3.0

    net = Scaled()
    q = quantise_params(list(net.parameters()), FP.param_scale)
    with pytest.raises(circuit.CircuitError, match="float constant"):
        circuit.export_onnx(net, q, FP, B, 64, 10, tmp_path / "m.onnx")


def test_unsupported_layers_are_refused_before_ezkl() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Softmax(dim=1))
    with pytest.raises(QuantError, match="not supported"):
        jobs._provable(net)


# --- a real block, validated with the real verifier --------------------------------------


def test_copier_of_commitment_and_proof_cannot_make_a_valid_block_but_the_owner_can(
    art: Path, trained: bytes, batches: list[EvalBatch], proven: tuple[int, bytes, bytes]
) -> None:
    k, proof, c = proven
    honest, copier = sorted(
        (SigningKey(sha256(b"circuit-p" + bytes([i]))) for i in range(2)), key=lambda s: s.public
    )
    publisher = SigningKey(sha256(b"circuit-pub"))
    m = circuit.Manifest.load(art)
    genesis = Genesis(
        "circuit-test",
        Timing(0, 10_000, 3_000, 3_000, 1_000, 2),
        3,
        (honest.public, copier.public),
        publisher.public,
        Task("digits", ARCH, 1, 32, 100_000, "iid", 0, 1),
        EvalPlan(
            B, len(batches), (64,), FP.input_scale, 10, merkle_root([b.hash() for b in batches])
        ),
        m.spec(),
        sha256(b"initial"),
    )
    cid = chain_id(genesis)
    binding = rules.commit_binding(cid, honest.public, 0, cid, c)
    c_honest = sign(CommitTx(0, cid, honest.public, binding, bytes(64)), honest, cid)
    # The copier can only copy the binding before the reveal: C is not public yet.
    c_copy = sign(CommitTx(0, cid, copier.public, binding, bytes(64)), copier, cid)
    reveal = sign(
        Reveal(
            0,
            batches[0],
            tuple(merkle_proof([b.hash() for b in batches], 0)),
            tuple(sorted([c_honest.hash(), c_copy.hash()])),
            bytes(64),
        ),
        publisher,
        cid,
    )
    p_honest = sign(ProofTx(0, c_honest.hash(), honest.public, c, k, proof, bytes(64)), honest, cid)
    p_copy = sign(ProofTx(0, c_copy.hash(), copier.public, c, k, proof, bytes(64)), copier, cid)

    def verify(pf: bytes, batch: EvalBatch, commitment: bytes, kk: int) -> bool:
        return jobs.verify(str(art), pf, batch.encode(), commitment, kk).ok

    def commitment_of(model: bytes) -> bytes:
        return jobs.commit(str(art), ARCH, model)

    def evaluate(model: bytes, batch: EvalBatch) -> int:
        return int(jobs.evaluate(str(art), ARCH, model, batch.encode()))

    def block_by(who: SigningKey, model: bytes, with_copy: bool) -> Block:
        commits = [c_honest, c_copy] if with_copy else [c_honest]
        proofs = [p_honest, p_copy] if with_copy else [p_honest]
        ranking = rules.rank_proofs(reveal.batch, proofs)
        rank = next(r.rank for r in ranking if r.participant == who.public)
        return sign(
            Block(
                0,
                cid,
                1,
                who.public,
                rank,
                reveal,
                tuple(sorted(commits, key=lambda x: x.hash())),
                tuple(sorted(proofs, key=lambda x: x.commit_id)),
                sha256(model),
                bytes(64),
            ),
            who,
            cid,
        )

    parent = ParentInfo(cid, -1, 0)
    with pytest.raises(InvalidError, match="does not open the commit's binding"):
        plaincheck.check_proof_tx(genesis, cid, reveal, c_copy, p_copy, verify)
    # Even reusing the winner's own model blob, the copier's block carries its bad proof.
    with pytest.raises(InvalidError, match="does not open the commit's binding"):
        plaincheck.check_block(
            genesis,
            cid,
            parent,
            block_by(copier, trained, True),
            trained,
            verify,
            commitment_of,
            evaluate,
        )
    own = model_to_bytes(build_model(ARCH, 42))
    with pytest.raises(InvalidError, match="does not match the proposer's commitment"):
        plaincheck.check_block(
            genesis, cid, parent, block_by(honest, own, False), own, verify, commitment_of, evaluate
        )
    good = block_by(honest, trained, False)
    assert (
        plaincheck.check_block(genesis, cid, parent, good, trained, verify, commitment_of, evaluate)
        == k
    )


def test_a_weight_beyond_the_protocol_bound_is_refused_not_wrapped(
    art: Path, batches: list[EvalBatch]
) -> None:
    """int64 casts of huge floats differ between CPUs; nodes would disagree on C."""
    net = build_model(ARCH, 8)
    with torch.no_grad():
        next(iter(net.parameters()))[0, 0] = 1e20
    with pytest.raises(QuantError, match="exceeds"):
        jobs.evaluate(str(art), ARCH, model_to_bytes(net), batches[0].encode())
    with pytest.raises(QuantError, match="exceeds"):
        jobs.commit(str(art), ARCH, model_to_bytes(net))
