"""Fixed-point quantisation shared by the circuit, the commitment and the plain evaluator.

The circuit is built with `scale_rebase_multiplier` high enough that ezkl never
rescales: every op stays exact integer arithmetic in the field. So the plain
evaluator here reproduces the circuit's k bit for bit with int64 numpy, with no
rounding rule to mirror. Inputs are quantised at `input_scale` bits, parameters
at `param_scale` bits; a Linear layer's output scale is its input's plus
`param_scale` (the bias is lifted to that scale by an exact shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

# The BN254 scalar field: ezkl's instances and commitments live here.
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617

IntArray = npt.NDArray[np.int64]

MAX_PARAM = 1 << 31  # quantised parameters must fit int32: a protocol bound, not ezkl's


class QuantError(ValueError):
    """A model or batch that the circuit cannot represent exactly."""


@dataclass(frozen=True)
class FixedPoint:
    input_scale: int = 7
    param_scale: int = 7
    # ezkl range-checks comparisons by decomposition into `legs` digits of
    # `base`: |values| must stay below base**legs / 2. 1024 x 4 (range +-5.5e11) fits
    # digits-mlp at B=16 in 2^13 rows, where 4096 x 3 needs 2^14: proving 3.96 s instead
    # of 4.90 s, a 164 MB proving key instead of 249 MB (bench/prover.py, 2 cores).
    decomp_base: int = 1024
    decomp_legs: int = 4

    @property
    def max_abs(self) -> int:
        return int(self.decomp_base**self.decomp_legs) // 2 - 1


def quantise_params(tensors: list[torch.Tensor], param_scale: int) -> list[IntArray]:
    """round(w * 2^scale), with one deterministic nudge.

    ezkl optimises an all-zero weight tensor away, which changes the circuit
    layout so `prove` with the chain's shared key hangs (DESIGN.md §4). A tensor
    that quantises to all zeros therefore gets its first element set to 1; the
    commitment, the proof and the plain evaluator all use these nudged values.
    """
    out = []
    for t in tensors:
        scaled = np.round(t.detach().to(torch.float64).numpy() * (1 << param_scale))
        # Casting an out-of-range float to int64 is CPU-dependent (x86 wraps, ARM
        # saturates): nodes would disagree on C. Refuse before casting.
        if not np.all(np.abs(scaled) <= MAX_PARAM):
            raise QuantError(
                f"a weight exceeds ±{MAX_PARAM} at scale 2^{param_scale}: not representable"
            )
        q = scaled.astype(np.int64)
        if not q.any():
            q.flat[0] = 1
        out.append(q)
    return out


def dequantise_params(qparams: list[IntArray], param_scale: int) -> list[torch.Tensor]:
    """Float tensors that ezkl re-quantises to exactly `qparams` (small ints / 2^s are exact)."""
    return [
        torch.tensor(q.astype(np.float64) / (1 << param_scale), dtype=torch.float32)
        for q in qparams
    ]


def quantise_inputs(x: npt.NDArray[np.floating], input_scale: int) -> npt.NDArray[np.int32]:
    return np.round(np.asarray(x, dtype=np.float64) * (1 << input_scale)).astype(np.int32)


def to_felt_hex(values: npt.ArrayLike) -> list[str]:
    """ezkl's instance encoding: the field element, 32 bytes little-endian, hex."""
    return [
        (int(v) % FIELD_MODULUS).to_bytes(32, "little").hex() for v in np.asarray(values).ravel()
    ]


def mlp_logits(qparams: list[IntArray], xq: IntArray, fp: FixedPoint) -> tuple[IntArray, int]:
    """Exact integer forward pass of Linear(/ReLU)* stacks; returns (logits, their scale).

    `qparams` alternate weight (out, in) and bias (out,), as in the state dict.
    """
    if len(qparams) % 2:
        raise QuantError("expected weight/bias pairs")
    h = xq.astype(np.int64)
    scale = fp.input_scale
    layers = len(qparams) // 2
    for i in range(layers):
        w, b = qparams[2 * i], qparams[2 * i + 1]
        if w.ndim != 2 or b.shape != (w.shape[0],) or h.shape[1] != w.shape[1]:
            raise QuantError(f"layer {i}: shapes {w.shape}, {b.shape} do not fit input {h.shape}")
        h = h @ w.T + (b << scale)
        scale += fp.param_scale
        _check_range(h, fp, f"layer {i}")  # before ReLU too: the circuit range-checks it
        if i < layers - 1:
            h = np.maximum(h, 0)
    return h, scale


def accuracy_count(
    logits: IntArray, scale: int, labels: npt.NDArray[np.integer], fp: FixedPoint
) -> int:
    """The circuit's head, in the clear: strict arg-max, ties count as wrong.

    a = max(l + Y), b = max(l - Y), correct = a - sum(Y) > b, with one-hot Y at the
    logits' scale (so "1" is 2^scale and no constant enters the graph).
    """
    one = 1 << scale
    y = np.zeros_like(logits)
    y[np.arange(len(labels)), labels] = one
    a = (logits + y).max(axis=1)
    b = (logits - y).max(axis=1)
    _check_range(np.concatenate([a, b]), fp, "head")
    return int(((a - one) > b).sum())


def _check_range(v: IntArray, fp: FixedPoint, where: str) -> None:
    if v.size and int(np.abs(v).max()) > fp.max_abs:
        raise QuantError(
            f"{where}: value {int(np.abs(v).max())} exceeds the circuit's range ±{fp.max_abs}; "
            "the model cannot be proven at this fixed point"
        )
