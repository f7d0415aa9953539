"""The heavy side of private aggregation, in the worker: masked vectors, their
commitments, unmasking, and the commitment of an aggregate.

Commitments of arbitrary field vectors come from ezkl's own `kzg_commit` over the
chain's SRS: committing scale_j * v_j at row j gives C(v) = L(v) + K exactly
(consensus.commitment; tests/test_aggregation.py checks it against the formula), in
0.05 s for 1,210 values where the pure-Python MSM takes 0.25 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import ezkl
import numpy as np
import torch

from consensus import bn254, commitment, optimizer, secagg
from consensus.aggregate import split_mean
from consensus.crypto import short
from consensus.errors import InvalidError
from consensus.masking import expand, masked
from consensus.types import AggregationSpec
from prover import circuit
from prover.models import build_model, model_from_bytes, model_to_bytes, param_shapes
from prover.quant import MAX_PARAM, QuantError, dequantise_params, quantise_params


@cache
def _scales(artifacts: str, arch: str) -> tuple[int, ...]:
    m = circuit.Manifest.load(Path(artifacts))
    shapes = [s for _, s in param_shapes(arch)]
    return tuple(commitment.scales(shapes, m.input_scale, m.param_scale))


def commit_vector(artifacts: str, arch: str, values: Sequence[int]) -> bn254.Point:
    """C(v) = sum v_j*B_j + K for a vector of integers or field elements."""
    factors = _scales(artifacts, arch)
    if len(values) != len(factors):
        raise InvalidError(f"{len(values)} values for a model of {len(factors)} parameters")
    d = Path(artifacts)
    column = [
        ((v * f) % bn254.R).to_bytes(32, "little").hex()
        for v, f in zip(values, factors, strict=True)
    ]
    points = ezkl.kzg_commit(
        column, str(d / circuit.VK), str(d / circuit.SETTINGS), str(d / circuit.SRS)
    )
    if len(points) != 1:
        raise InvalidError(f"the circuit commits {len(points)} columns; aggregation needs one")
    pt: Any = points[0]  # ezkl's stubs do not name PyG1Affine's x and y (hex, little-endian)
    return (
        int.from_bytes(bytes.fromhex(pt.x), "little"),
        int.from_bytes(bytes.fromhex(pt.y), "little"),
    )


@cache
def constant(artifacts: str, arch: str) -> bn254.Point:
    """K = C(0)."""
    return commit_vector(artifacts, arch, [0] * len(_scales(artifacts, arch)))


def linear(artifacts: str, arch: str, values: Sequence[int]) -> bn254.Point:
    """L(v) = C(v) - K."""
    return bn254.sub(commit_vector(artifacts, arch, values), constant(artifacts, arch))


def params_of(artifacts: str, arch: str, weights: bytes) -> list[int]:
    """A trained model's quantised parameters, exactly as its commitment C_i has them."""
    m = circuit.Manifest.load(Path(artifacts))
    q = quantise_params(list(model_from_bytes(arch, weights).parameters()), m.param_scale)
    return [int(x) for t in q for x in t.ravel()]


def exact_params(artifacts: str, arch: str, weights: bytes) -> list[int]:
    """An aggregate's integers M from its blob: every weight must be M_j / 2^s exactly
    (no rounding, no nudge: the aggregate is committed by the formula alone)."""
    m = circuit.Manifest.load(Path(artifacts))
    out: list[int] = []
    for t in model_from_bytes(arch, weights).parameters():
        scaled = t.detach().to(torch.float64).numpy() * (1 << m.param_scale)
        if not np.all(scaled == np.round(scaled)) or not np.all(np.abs(scaled) <= MAX_PARAM):
            raise QuantError("the aggregate's weights are not integers at the parameter scale")
        out += [int(x) for x in scaled.astype(np.int64).ravel()]
    return out


def model_blob(artifacts: str, arch: str, values: Sequence[int]) -> bytes:
    """The model blob whose weights are exactly values / 2^param_scale."""
    m = circuit.Manifest.load(Path(artifacts))
    if any(abs(v) > MAX_PARAM for v in values):
        raise QuantError(f"an aggregate weight exceeds ±{MAX_PARAM}")
    net = build_model(arch, 0)
    tensors, at = [], 0
    for p in net.parameters():
        n = p.numel()
        tensors.append(np.asarray(values[at : at + n], dtype=np.int64).reshape(tuple(p.shape)))
        at += n
    with torch.no_grad():
        for p, t in zip(net.parameters(), dequantise_params(tensors, m.param_scale), strict=True):
            p.copy_(t)
    return model_to_bytes(net)


def mask_update(
    artifacts: str,
    arch: str,
    weights: bytes,
    weight: int,
    secret: int,
    me: bytes,
    others: Sequence[tuple[bytes, bytes]],
    context: bytes,
    threshold: int,
) -> secagg.MaskedUpdate:
    """This member's update for the selection `context`, unsigned: y, the L(u) of each
    pairwise mask, L(p), and the sharing of its self seed."""
    q = params_of(artifacts, arch, weights)
    masks = secagg.member_masks(secret, me, others, context, len(q), threshold)
    y = masked([weight * v for v in q], masks.pair_masks, masks.self_mask)
    pairs = tuple(bn254.compress(linear(artifacts, arch, u)) for _, u in masks.pair_masks)
    self_c = bn254.compress(linear(artifacts, arch, masks.self_mask))
    return secagg.unsigned_update(context, me, secagg.encode_vector(y), pairs, self_c, masks)


def check_update(
    artifacts: str,
    arch: str,
    model_commitment: bytes,
    weight: int,
    update: secagg.MaskedUpdate,
    signs: Sequence[int],
    rest: Sequence[bytes] = (),
) -> bool:
    """L(y) == a*(C - K) + sum s*L(u) + L(p): the member's vector (its update's part 0
    and the `rest`, v7) is its committed model."""
    n = len(_scales(artifacts, arch))
    y = secagg.decode_vector(secagg.whole_vector(update, rest), n)
    k_point = constant(artifacts, arch)
    weighted = bn254.mul(bn254.sub(bn254.decompress(model_commitment), k_point), weight)
    want = secagg.expected_update(
        weighted,
        [bn254.decompress(c) for c in update.pair_commitments],
        signs,
        bn254.decompress(update.self_commitment),
    )
    return linear(artifacts, arch, y) == want


def mask_commitment(artifacts: str, arch: str, seed: bytes) -> bytes:
    """L(expand(seed)), compressed: what a member must have committed for the mask that
    seed expands to (a revealed self seed, or a disputed pair's true seed)."""
    n = len(_scales(artifacts, arch))
    return bn254.compress(linear(artifacts, arch, expand(seed, n)))


def self_seed_matches(artifacts: str, arch: str, self_commitment: bytes, seed: bytes) -> bool:
    """Whether a revealed self seed expands to the mask the member committed L(p) of."""
    return mask_commitment(artifacts, arch, seed) == self_commitment


def aggregate(
    artifacts: str,
    arch: str,
    members: Sequence[bytes],
    vectors: Sequence[bytes],
    seeds: Sequence[bytes],
    self_commitments: Sequence[bytes],
    weight_sum: int,
) -> tuple[bytes, bytes]:
    """(the blob of M, R as one byte per parameter) from a completed selection's vectors
    and every member's self-mask seed (all in member order); a seed that does not open its
    member's self-mask commitment names that member, so it alone is blamed."""
    for member, seed, committed in zip(members, seeds, self_commitments, strict=True):
        if not self_seed_matches(artifacts, arch, committed, seed):
            raise InvalidError(
                f"member {short(member, 16)}'s self seed does not open its self-mask commitment"
            )
    n = len(_scales(artifacts, arch))
    total = secagg.unmasked_sum([secagg.decode_vector(v, n) for v in vectors], seeds)
    mean, rest = split_mean(total, weight_sum)
    if weight_sum > 256:
        raise InvalidError("a remainder is one byte: the weights may sum to at most 256")
    return model_blob(artifacts, arch, mean), bytes(rest)


def commit_aggregate(
    artifacts: str, arch: str, weights: bytes, remainder: bytes, weight_sum: int
) -> bytes:
    """C(S*M + R), compressed: what `BestShare.conclude` compares with the members' C_i."""
    mean = exact_params(artifacts, arch, weights)
    if len(remainder) != len(mean):
        raise InvalidError(f"the remainder has {len(remainder)} values for {len(mean)} parameters")
    total = [weight_sum * m + r for m, r in zip(mean, remainder, strict=True)]
    return bn254.compress(commit_vector(artifacts, arch, total))


def server_step(
    artifacts: str, arch: str, parent: bytes, velocity: bytes, mean: bytes, m: optimizer.Momentum
) -> tuple[list[int], list[int]]:
    """(G', V') from the parent's model blob (quantised as participants train from it),
    its velocity blob (empty: zero) and the aggregate's blob (consensus.optimizer)."""
    g = params_of(artifacts, arch, parent)
    v = optimizer.decode_velocity(velocity, len(g))
    return optimizer.step(g, v, exact_params(artifacts, arch, mean), m)


def step_blobs(
    artifacts: str, arch: str, parent: bytes, velocity: bytes, mean: bytes, m: optimizer.Momentum
) -> tuple[bytes, bytes]:
    """The blobs of G' and V' a block under a server optimizer carries."""
    g2, v2 = server_step(artifacts, arch, parent, velocity, mean, m)
    return model_blob(artifacts, arch, g2), optimizer.encode_velocity(v2)


def check_step(
    artifacts: str,
    arch: str,
    parent: bytes,
    velocity: bytes,
    mean: bytes,
    m: optimizer.Momentum,
    model: bytes,
    new_velocity: bytes,
) -> bool:
    """Whether a block's G' and V' blobs are the step: G' compared as integers (a model
    blob's bytes are torch's business), V' byte for byte (its encoding is ours)."""
    g2, v2 = server_step(artifacts, arch, parent, velocity, mean, m)
    return exact_params(artifacts, arch, model) == g2 and new_velocity == optimizer.encode_velocity(
        v2
    )


def spec(artifacts: str, arch: str, unusable_rows: int) -> AggregationSpec:
    """The genesis's AggregationSpec for this circuit: the basis from the SRS by the
    formula, its K checked against ezkl's own C(0)."""
    m = circuit.Manifest.load(Path(artifacts))
    shapes = [s for _, s in param_shapes(arch)]
    srs = (Path(artifacts) / circuit.SRS).read_bytes()
    points, k_point = commitment.basis(srs, shapes, m.input_scale, m.param_scale, unusable_rows)
    if k_point != constant(artifacts, arch):
        raise InvalidError("the formula's K differs from ezkl's commitment of zero weights")
    return AggregationSpec(
        unusable_rows, len(points), commitment.basis_hash(points, k_point), bn254.compress(k_point)
    )
