"""Convolutions in the accuracy circuit, with real ezkl: the exact evaluator (prover.quant)
reproduces ezkl's conv arithmetic bit for bit, and a convolutional model's proof of k
verifies with k the plain evaluator's."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import ezkl
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from consensus.types import EvalBatch
from prover import circuit, jobs
from prover.client import Verified
from prover.models import Reshape, build_model, model_from_bytes, model_to_bytes
from prover.quant import FIELD_MODULUS, FixedPoint, logits, quantise_params
from prover.train import train_local

pytestmark = pytest.mark.slow  # real ezkl proofs of CNNs: not in the fast tier

ARCH = "digits-cnn"
B = 4
FP = FixedPoint()


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cnn")
    jobs.build_circuit(ARCH, B, str(out), 1, 13, None)
    return out


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    d = load_digits()
    return (d.data / 16).astype(np.float32), d.target.astype(np.int64)


def _batch(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> bytes:
    return jobs.make_eval_batch(0, x, y, FP.input_scale).encode()


def test_a_trained_cnns_proof_verifies_with_the_evaluators_k(
    art: Path, digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    x, y = digits
    assert circuit.Manifest.load(art).input_dim == 64  # from the ArchSpec, not a Linear
    weights = train_local(
        ARCH, model_to_bytes(build_model(ARCH, 3)), x[:1200], y[:1200],
        epochs=3, batch_size=32, lr=0.1, seed=9,
    )  # fmt: skip
    batch = _batch(x[1300 : 1300 + B], y[1300 : 1300 + B])
    proved = jobs.prove(str(art), ARCH, weights, batch)
    assert proved.k == jobs.evaluate(str(art), ARCH, weights, batch) >= 2
    c = jobs.commit(str(art), ARCH, weights)
    assert jobs.verify(str(art), proved.proof, batch, c, proved.k) == Verified(True, "")
    if proved.k < B:
        assert not jobs.verify(str(art), proved.proof, batch, c, proved.k + 1).ok


def test_in_circuit_k_equals_the_evaluators_on_random_cnns_and_batches(
    art: Path, digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    x, y = digits
    rng = np.random.default_rng(2)
    seen = set()
    for seed in range(5):
        weights = model_to_bytes(build_model(ARCH, seed))
        net = model_from_bytes(ARCH, weights)
        q = quantise_params(list(net.parameters()), FP.param_scale)
        for _ in range(2):
            idx = rng.choice(len(x), B, replace=False)
            batch = _batch(x[idx], y[idx])
            xq, labels = jobs.decode_batch(EvalBatch.decode(batch), 64)
            k = circuit.circuit_k(art, net, q, xq, labels)
            assert k == jobs.evaluate(str(art), ARCH, weights, batch), f"model {seed}"
            seen.add(k)
    assert len(seen) > 1


def _felt(h: str) -> int:
    v = int.from_bytes(bytes.fromhex(h), "little")
    return v - FIELD_MODULUS if v > FIELD_MODULUS // 2 else v


def test_ezkl_s_conv_logits_are_the_evaluators_with_stride_and_padding(tmp_path: Path) -> None:
    """The logits themselves, from ezkl's witness of the bare net under the chain's run args:
    asymmetric stride and padding, conv -> conv with no ReLU between, ReLU after Flatten."""
    net = nn.Sequential(
        Reshape(2, 7, 6),
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=(1, 3), padding=1),
        nn.Flatten(),
        nn.ReLU(),
        nn.Linear(48, 5),
    )
    rng = np.random.default_rng(3)
    q = [rng.integers(-120, 120, size=tuple(p.shape)).astype(np.int64) for p in net.parameters()]
    circuit._set_params(net, q, FP)
    xq = rng.integers(0, 129, size=(3, 84))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(3, 84),), str(tmp_path / "m.onnx"), dynamo=False)
    onnx, settings, compiled = (str(tmp_path / n) for n in ("m.onnx", "s.json", "c.ezkl"))
    assert ezkl.gen_settings(onnx, settings, circuit._run_args(FP, 15))
    assert ezkl.compile_circuit(onnx, compiled, settings)
    (tmp_path / "in.json").write_text(json.dumps({"input_data": [(xq / 128).ravel().tolist()]}))
    ezkl.gen_witness(str(tmp_path / "in.json"), compiled, str(tmp_path / "w.json"))
    witness = json.loads((tmp_path / "w.json").read_text())
    got = np.array([_felt(h) for h in witness["outputs"][0]]).reshape(3, 5)
    want, scale = logits(net, q, xq, FP)
    assert scale == 7 + 3 * 7
    assert np.array_equal(got, want)


def test_fold_logrows_sizes_a_circuit_to_a_few_columns() -> None:
    assert circuit.fold_logrows(26_064, 13) == 13  # digits-cnn B=16: 4 columns of 2^13
    assert circuit.fold_logrows(116_848, 13) == 15  # mnist-cnn B=16: 15 columns failed setup
    assert circuit.fold_logrows(116_848, 17) == 17  # a floor, never lowered
    assert circuit.fold_logrows(0, 13) == 13


def test_a_circuit_too_tall_for_its_logrows_grows_when_asked(tmp_path: Path) -> None:
    """testnet init (grow): digits-cnn at B=32 has 52,128 rows, more than four columns of
    2^13, so the circuit is built at 2^14; given exactly (circuit build), 2^13 stays."""
    built = jobs.build_circuit(ARCH, 32, str(tmp_path / "grown"), 1, 13, None, grow=True)
    assert built.manifest["logrows"] == 14
    assert circuit.Manifest.load(tmp_path / "grown").logrows == 14
