"""The weight commitment as a formula (consensus.commitment) against ezkl's own, on real
circuits: C(q) = sum q_j*B_j + K with the basis read from the chain's SRS, and the
affine identity the private aggregate rests on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from consensus import bn254, commitment
from prover import circuit, jobs
from prover.models import build_model, param_shapes
from prover.quant import quantise_params

pytestmark = pytest.mark.slow  # ezkl's own commitments: not in the fast tier

# every architecture the circuit proves (prover.jobs._provable), at a batch and logrows that
# build quickly (mnist-mlp: 25,450 parameters in one column of 2^15 rows, ~17 s; mnist-cnn
# at B=1: 7,709 rows); the CNNs check the formula's order and bias scales for conv kernels
CIRCUITS = [
    ("digits-mlp-tiny", 4, 13),
    ("digits-mlp", 4, 13),
    ("mnist-mlp", 1, 15),
    ("digits-cnn", 4, 13),
    ("mnist-cnn", 1, 14),
]


@pytest.fixture(scope="module", params=CIRCUITS, ids=[c[0] for c in CIRCUITS])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    arch, batch, logrows = request.param
    out = tmp_path_factory.mktemp(arch)
    jobs.build_circuit(arch, batch, str(out), 1, logrows, None)
    return arch, out


def _model(arch: str, q: list[np.ndarray[Any, Any]]) -> torch.nn.Module:
    net = build_model(arch, 0)
    with torch.no_grad():
        for p, v in zip(net.parameters(), q, strict=True):
            p.copy_(torch.from_numpy(v.astype(np.float64) / 128))
    return net


def _ezkl_commit(arch: str, out: Path, q: list[np.ndarray[Any, Any]]) -> bn254.Point:
    return bn254.decompress(circuit.commit(out, _model(arch, q), q))


def _flat(q: list[np.ndarray[Any, Any]]) -> list[int]:
    return [int(x) for v in q for x in v.ravel()]


def test_the_formula_is_ezkl_s_commitment(built: tuple[str, Path]) -> None:
    arch, out = built
    manifest = circuit.Manifest.load(out)
    shapes = [s for _, s in param_shapes(arch)]
    b, k_point = commitment.basis(
        (out / circuit.SRS).read_bytes(), shapes, manifest.input_scale, manifest.param_scale, 6
    )
    assert len(b) == sum(int(np.prod(s)) for s in shapes)
    rng = np.random.default_rng(4)
    models = []
    for _ in range(3):
        q = [rng.integers(-200, 200, size=s).astype(np.int64) for s in shapes]
        models.append(q)
        assert commitment.commit(b, k_point, _flat(q)) == _ezkl_commit(arch, out, q)
    # quantised trained-style weights (the nudge included) fit too
    q = quantise_params(list(build_model(arch, 7).parameters()), manifest.param_scale)
    assert commitment.commit(b, k_point, _flat(q)) == _ezkl_commit(arch, out, q)
    # affine: C(q1 + q2 + q3) = C1 + C2 + C3 - 2K, all from ezkl
    total = [a + c + d for a, c, d in zip(*models, strict=True)]
    cs = [_ezkl_commit(arch, out, q) for q in models]
    want = bn254.sub(bn254.add(*cs), bn254.mul(k_point, 2))
    assert _ezkl_commit(arch, out, total) == want
