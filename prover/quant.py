"""Fixed-point quantisation shared by the circuit, the commitment and the plain evaluator.

The circuit is built with `scale_rebase_multiplier` high enough that ezkl never
rescales: every op stays exact integer arithmetic in the field. So the plain
evaluator here (`logits`, then `accuracy_count`) reproduces the circuit's k bit for
bit with int64 numpy, with no rounding rule to mirror: nodes re-check a revealed
model's k with it, and the prover refuses a model it cannot mirror before ezkl runs.
Inputs are quantised at `input_scale` bits, parameters at `param_scale` bits; a
Linear or Conv2d layer's output scale is its input's plus `param_scale` (its bias is
lifted to that scale by an exact shift); ReLU, Flatten and Reshape keep the scale.
tests/test_prover_conv.py checks the logits against ezkl's witness, strides and
padding included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

from prover.models import Reshape

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


def check_layers(net: nn.Module) -> list[nn.Module]:
    """The net's layers in order, or QuantError naming the first the evaluator cannot mirror.

    Linear, Conv2d (any stride and zero padding; groups 1, dilation 1), ReLU, Flatten
    (from dim 1) and Reshape, in nested Sequentials. Every Linear and Conv2d needs a
    bias: the commitment's layout pairs a weight with its bias (consensus.commitment).
    """
    layers = [m for m in net.modules() if not isinstance(m, nn.Sequential)]
    for m in layers:
        name = type(m).__name__
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or tuple(m.dilation) != (1, 1):
                raise QuantError(
                    f"Conv2d with groups={m.groups}, dilation={m.dilation}: "
                    "the exact evaluator covers groups=1, dilation=1 only"
                )
            if isinstance(m.padding, str) or m.padding_mode != "zeros":
                raise QuantError(
                    f"Conv2d padding {m.padding!r} ({m.padding_mode}): "
                    "only explicit zero padding is covered"
                )
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise QuantError("Flatten must keep the batch dimension and flatten the rest")
        elif not isinstance(m, nn.Linear | nn.ReLU | Reshape):
            raise QuantError(f"layer {name} is not supported by the accuracy circuit")
        if isinstance(m, nn.Linear | nn.Conv2d) and m.bias is None:
            raise QuantError(f"{name} without a bias: the commitment pairs weights with biases")
    return layers


def logits(
    net: nn.Module, qparams: list[IntArray], xq: IntArray, fp: FixedPoint
) -> tuple[IntArray, int]:
    """Exact integer forward pass of the net's layers on flat inputs; (logits, their scale).

    `net` gives only the structure (layer kinds, conv stride and padding, reshapes);
    the values are `qparams`, a weight then its bias per Linear/Conv2d in state-dict
    order, as committed. Each Linear/Conv2d adds `param_scale` to the scale and lifts
    its bias to the new scale by an exact shift, as the circuit does.
    """
    layers = check_layers(net)
    params = iter(qparams)
    h = np.asarray(xq, dtype=np.int64)
    scale = fp.input_scale
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear | nn.Conv2d):
            w, b = next(params, None), next(params, None)
            if w is None or b is None or w.shape != tuple(m.weight.shape):
                raise QuantError(f"layer {i}: parameters do not fit {type(m).__name__}")
            if b.shape != (w.shape[0],):
                raise QuantError(f"layer {i}: bias shape {b.shape} does not fit {w.shape}")
            _check_overflow(h, w, b, scale, i)
            if isinstance(m, nn.Linear):
                if h.ndim != 2 or h.shape[1] != w.shape[1]:
                    raise QuantError(f"layer {i}: Linear {w.shape} does not fit input {h.shape}")
                h = h @ w.T + (b << scale)
            else:
                pad = m.padding
                assert not isinstance(pad, str)  # check_layers refused string paddings
                h = conv2d(h, w, b << scale, (m.stride[0], m.stride[1]), (pad[0], pad[1]))
            scale += fp.param_scale
            _check_range(h, fp, f"layer {i}")  # before ReLU too: the circuit range-checks it
        elif isinstance(m, nn.ReLU):
            h = np.maximum(h, 0)
        elif isinstance(m, nn.Flatten):
            h = h.reshape(len(h), -1)
        else:
            assert isinstance(m, Reshape)
            if h[0].size != math.prod(m.shape):
                raise QuantError(f"layer {i}: cannot reshape {h.shape[1:]} to {m.shape}")
            h = h.reshape(len(h), *m.shape)
    if next(params, None) is not None:
        raise QuantError("more parameters than the layers use")
    if h.ndim != 2:
        raise QuantError(f"the net's output has shape {h.shape}, expected (batch, classes)")
    return h, scale


def conv2d(
    x: IntArray, w: IntArray, b: IntArray, stride: tuple[int, int], padding: tuple[int, int]
) -> IntArray:
    """Exact 2-D cross-correlation (torch's Conv2d, groups 1, dilation 1) in int64.

    x (B, C, H, W), w (O, C, kh, kw), b (O,) already at the output's scale.
    """
    if x.ndim != 4 or x.shape[1] != w.shape[1]:
        raise QuantError(f"Conv2d {w.shape} does not fit input {x.shape} (needs a Reshape first?)")
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = w.shape[2], w.shape[3]
    if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
        raise QuantError(f"Conv2d kernel {kh}x{kw} is larger than its padded input {x.shape}")
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # (B, H', W', O)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)) + b[None, :, None, None]


def _check_overflow(h: IntArray, w: IntArray, b: IntArray, scale: int, layer: int) -> None:
    """Refuse sums int64 could wrap: past this bound the circuit's field values and numpy's
    would differ silently (the bound is loose, so it refuses only absurd models)."""
    row = int(np.abs(w.reshape(len(w), -1)).sum(axis=1).max(initial=0))  # < 2^31 * fan-in
    bound = int(np.abs(h).max(initial=0)) * row + (int(np.abs(b).max(initial=0)) << scale)
    if bound >= 1 << 62:
        raise QuantError(f"layer {layer}: partial sums could exceed int64; not representable")


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
