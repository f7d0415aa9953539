"""The weight commitment as a formula: C(q) = sum q_j * B_j + K, from the chain's SRS.

ezkl (23.0.5, `polycommit` parameters) commits to one column holding the parameters
in state-dict order, each layer's weight row-major (a Linear's [out, in], a Conv2d's
[out, in, kh, kw]: ezkl keeps the kernel's own order) then its bias lifted to the
layer's input scale (biases of parameterised layer l, Linear or Conv2d alike, are
multiplied by 2^(input_scale + l * param_scale)), on rows 0.. of a 2^logrows domain, with the last `unusable_rows`
rows (halo2's blinding rows) set to 1. So with Lag_i the SRS's Lagrange-basis points:
B_j = Lag_j * (1 for a weight, 2^s for a bias at scale s) and K = sum of the last
`unusable_rows` Lag_i. Every node derives the basis from the pinned SRS file in
milliseconds and checks its hash against the genesis; with it a block's aggregate is
checked by small multi-scalar multiplications (consensus.aggregate) and no individual
model is ever needed. docs/protocol.md §10 pins the layout; tests check the formula
against ezkl's own commitments on real circuits.

One ezkl behaviour the formula does not follow: an all-zero bias of a hidden layer is
optimised out of the circuit and moves the rows after it. Quantisation never leaves a
tensor all zero (prover.quant nudges one element), so committed models fit the
formula; an aggregate M or remainder R is only ever committed by this formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from consensus import bn254
from consensus.crypto import sha256
from consensus.errors import InvalidError

POINT_BYTES = 64  # an SRS point: x, y little-endian, Montgomery form
UNUSABLE_ROWS = 6  # halo2's blinding rows in ezkl 23.0.5's circuits (tests check it)
_R_INV = pow(2**256, -1, bn254.P)  # leaves Montgomery form


def _point(raw: bytes) -> bn254.Point:
    x = int.from_bytes(raw[:32], "little") * _R_INV % bn254.P
    y = int.from_bytes(raw[32:64], "little") * _R_INV % bn254.P
    pt = (x, y)
    if not bn254.is_on_curve(pt):
        raise InvalidError("SRS: a point is not on the curve")
    return pt


def srs_logrows(srs: bytes) -> int:
    if len(srs) < 4:
        raise InvalidError("SRS: too short")
    return int.from_bytes(srs[:4], "little")


def lagrange_points(srs: bytes, rows: Sequence[int]) -> list[bn254.Point]:
    """The Lagrange-basis points of halo2's raw ParamsKZG file at the given rows:
    u32 k (LE), 2^k monomial points, then 2^k Lagrange points, then the G2 points."""
    k = srs_logrows(srs)
    if not 1 <= k <= 26:
        raise InvalidError(f"SRS: k = {k} is out of range")
    n = 1 << k
    start = 4 + POINT_BYTES * n
    if len(srs) < start + POINT_BYTES * n:
        raise InvalidError("SRS: shorter than its 2^k Lagrange points")
    out = []
    for row in rows:
        if not 0 <= row < n:
            raise InvalidError(f"SRS: row {row} outside the 2^{k} domain")
        at = start + POINT_BYTES * row
        out.append(_point(srs[at : at + POINT_BYTES]))
    return out


def scales(shapes: Sequence[tuple[int, ...]], input_scale: int, param_scale: int) -> list[int]:
    """Each parameter's factor in the committed column: 1 for a weight, 2^(input_scale +
    l*param_scale) for a bias of layer l (shapes: a Linear or Conv2d weight, then its bias
    (out,), alternating as in the state dict). B_j = scale_j * Lag_j."""
    if len(shapes) % 2 or not shapes:
        raise InvalidError("commitment basis: expected weight/bias shape pairs")
    out: list[int] = []
    scale = input_scale
    for w_shape, b_shape in zip(shapes[0::2], shapes[1::2], strict=True):
        out += [1] * math.prod(w_shape)
        out += [1 << scale] * math.prod(b_shape)
        scale += param_scale
    return out


def basis(
    srs: bytes,
    shapes: Sequence[tuple[int, ...]],
    input_scale: int,
    param_scale: int,
    unusable_rows: int,
) -> tuple[list[bn254.Point], bn254.Point]:
    """(B, K) for a net whose parameters have these shapes (Linear and Conv2d layers)."""
    factors = scales(shapes, input_scale, param_scale)
    n = 1 << srs_logrows(srs)
    if len(factors) + unusable_rows > n:
        raise InvalidError(f"commitment basis: {len(factors)} parameters do not fit a 2^k domain")
    lag = lagrange_points(srs, range(len(factors)))
    tail = lagrange_points(srs, range(n - unusable_rows, n))
    points = [p if f == 1 else bn254.mul(p, f) for p, f in zip(lag, factors, strict=True)]
    return points, bn254.add(*tail)


def basis_hash(points: Sequence[bn254.Point], k_point: bn254.Point) -> bytes:
    """What the genesis pins: sha256 of K then every B_j, compressed (32 bytes each)."""
    return sha256(bn254.compress(k_point) + b"".join(bn254.compress(p) for p in points))


def commit(points: Sequence[bn254.Point], k_point: bn254.Point, q: Sequence[int]) -> bn254.Point:
    """C(q) = sum q_j * B_j + K for integer (or field) parameters q."""
    if len(q) != len(points):
        raise InvalidError(f"commitment: {len(q)} values for {len(points)} basis points")
    return bn254.add(bn254.msm(points, q), k_point)
