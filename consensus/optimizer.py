"""The server optimizer: the next global model from the parent's and a block's aggregate.

The aggregate M of a round is public (the block carries it, checked against the
members' commitments), so a server step on it is something every node can recompute
and check: FedAvgM (Hsu et al., 2019) in integers. With G the global model and V a
velocity, both integer vectors (G at the parameter scale, V at `scale` times it),
an aggregate M gives

    V' = rdiv(beta_num * V, beta_den) + scale * (M - G)
    G' = G + rdiv(V', scale)

From V = 0 the first step is G' = M (plain averaging); later steps keep a fraction
beta of the earlier ones, so the chain takes the longer steps that label skew makes
the best-ranked local models too timid to take. A round without an aggregate leaves
G and V as they are. G' is clamped to what a model blob holds. Integers only, rounding half up (`rdiv`), so every node computes
the same G' bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.errors import InvalidError
from consensus.types import RuleSpec

SERVERS = ("none", "momentum")
PARAM_LIMIT = 1 << 31  # |G'| is kept within what a model blob holds (prover.quant.MAX_PARAM)
VELOCITY_BYTES = 8  # one signed 64-bit integer per parameter: |V| < scale * 2^32 * den


@dataclass(frozen=True)
class Momentum:
    beta_num: int  # beta = beta_num / beta_den, below 1
    beta_den: int
    scale: int  # V is kept at this multiple of the parameter scale (its resolution)

    def __post_init__(self) -> None:
        if not (0 <= self.beta_num < self.beta_den and self.scale >= 1):
            raise InvalidError("momentum: need 0 <= beta_num < beta_den and scale >= 1")


def server_of(spec: RuleSpec) -> Momentum | None:
    """The genesis's server optimizer (None: the aggregate is the next global model)."""
    if spec.server == "none":
        return None
    if spec.server != "momentum":
        raise InvalidError(f"rule: server must be one of {SERVERS}, not {spec.server!r}")
    return Momentum(spec.momentum_num, spec.momentum_den, spec.velocity_scale)


def rdiv(a: int, b: int) -> int:
    """a / b rounded to the nearest integer, halves up (b > 0); floor division makes it
    the same for negative a in every language that floors."""
    return (2 * a + b) // (2 * b)


def step(
    g: Sequence[int], v: Sequence[int], m: Sequence[int], spec: Momentum
) -> tuple[list[int], list[int]]:
    """(G', V') after an aggregate M on a global model G with velocity V."""
    if not len(g) == len(v) == len(m):
        raise InvalidError("momentum: the model, velocity and aggregate differ in size")
    v2 = [
        rdiv(spec.beta_num * vi, spec.beta_den) + spec.scale * (mi - gi)
        for gi, vi, mi in zip(g, v, m, strict=True)
    ]
    g2 = [
        max(-PARAM_LIMIT, min(PARAM_LIMIT, gi + rdiv(vi, spec.scale)))
        for gi, vi in zip(g, v2, strict=True)
    ]
    return g2, v2


def encode_velocity(v: Sequence[int]) -> bytes:
    """V's blob: big-endian two's complement, VELOCITY_BYTES each. The genesis's bounds
    (den <= 1024, scale <= 2^16) keep |V| below 2^58 whatever the aggregates are."""
    return b"".join(x.to_bytes(VELOCITY_BYTES, "big", signed=True) for x in v)


def decode_velocity(blob: bytes, n: int) -> list[int]:
    """V from its blob; the empty blob (the chain's start) is zero."""
    if not blob:
        return [0] * n
    if len(blob) != n * VELOCITY_BYTES:
        raise InvalidError(
            f"velocity: {len(blob)} bytes, a model of {n} parameters has {n * VELOCITY_BYTES}"
        )
    return [
        int.from_bytes(blob[i : i + VELOCITY_BYTES], "big", signed=True)
        for i in range(0, len(blob), VELOCITY_BYTES)
    ]
