"""Masks for private aggregation: key agreement, mask expansion, and a proof of a shared key.

Double masking as in Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017): member i of a selected set sends
y_i = a_i*q_i + sum_j s(i,j)*u_ij + p_i over the BN254 scalar field, where u_ij is the
pairwise mask of i and j (from their Diffie-Hellman key; s(i,j) = +1 if i's key sorts
before j's, else -1, so the pairwise masks cancel in the sum) and p_i a self mask from a
seed only i knows until the set is complete. Diffie-Hellman runs on BN254 G1 itself
(consensus.bn254), so a member accused of using a wrong pairwise mask can be checked
by anyone from a revealed shared point and a Chaum-Pedersen proof that it is right.

Every byte here is specified in docs/protocol.md §10; tests/test_masking.py pins
known answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus import bn254
from consensus.bn254 import G, Point, R
from consensus.crypto import sha256
from consensus.errors import InvalidError

PAIR_DOMAIN = b"zkpot/pair-mask/v2"
SELF_DOMAIN = b"zkpot/self-mask/v2"
DLEQ_DOMAIN = b"zkpot/dleq/v2"


def public_key(secret: int) -> Point:
    if not 1 <= secret < R:
        raise InvalidError("a mask key's secret must be in [1, R)")
    return bn254.mul(G, secret)


def shared_point(secret: int, their_public: Point) -> Point:
    if their_public is None:
        raise InvalidError("a mask public key cannot be the identity")
    return bn254.mul(their_public, secret)


def expand(seed: bytes, length: int) -> list[int]:
    """`length` field elements from a 32-byte seed: element t is the big-endian integer
    of sha256(seed || t || 0x00) || sha256(seed || t || 0x01) (t as 4 bytes big-endian),
    reduced mod R (64 bytes for a 254-bit modulus: the bias is below 2^-250)."""
    out = []
    for t in range(length):
        tb = t.to_bytes(4, "big")
        wide = sha256(seed + tb + b"\x00") + sha256(seed + tb + b"\x01")
        out.append(int.from_bytes(wide, "big") % R)
    return out


def pair_seed(shared: Point, context: bytes) -> bytes:
    """The seed of a pair's mask for one selection (`context`: its hash)."""
    return sha256(PAIR_DOMAIN + bn254.compress(shared) + context)


def self_seed(secret_seed: bytes, context: bytes) -> bytes:
    """A member's self-mask seed for one selection: a field element (32 bytes big-endian,
    below R; version 5) so that it can be secret-shared (consensus.shamir)."""
    return (int.from_bytes(sha256(SELF_DOMAIN + secret_seed + context), "big") % R).to_bytes(
        32, "big"
    )


def pair_sign(mine: bytes, theirs: bytes) -> int:
    if mine == theirs:
        raise InvalidError("a member has no pairwise mask with itself")
    return 1 if mine < theirs else -1


def to_field(values: Sequence[int]) -> list[int]:
    return [v % R for v in values]


def to_signed(values: Sequence[int]) -> list[int]:
    """Field elements back to the integers they stand for: above R/2 is negative."""
    return [v - R if v > R // 2 else v for v in values]


def masked(
    weighted: Sequence[int],
    pair_masks: Sequence[tuple[int, Sequence[int]]],
    self_mask: Sequence[int],
) -> list[int]:
    """y = weighted + sum sign*u + p over the field; `pair_masks` holds (sign, u)."""
    y = [(w + p) % R for w, p in zip(weighted, self_mask, strict=True)]
    for sign, u in pair_masks:
        y = [(a + sign * b) % R for a, b in zip(y, u, strict=True)]
    return y


def field_sum(vectors: Sequence[Sequence[int]]) -> list[int]:
    if not vectors:
        raise InvalidError("nothing to sum")
    total = [0] * len(vectors[0])
    for v in vectors:
        if len(v) != len(total):
            raise InvalidError("vectors of different lengths")
        total = [(a + b) % R for a, b in zip(total, v, strict=True)]
    return total


@dataclass(frozen=True)
class SharedKeyProof:
    """Chaum-Pedersen: the same secret x gives public = x*G and shared = x*their_public."""

    challenge: int
    response: int


def _challenge(*points: Point) -> int:
    data = DLEQ_DOMAIN + b"".join(bn254.compress(p) for p in points)
    return int.from_bytes(sha256(data), "big") % R


def prove_shared(secret: int, their_public: Point) -> tuple[Point, SharedKeyProof]:
    """The shared point and a proof that it is right; the nonce is derived, not drawn."""
    mine = public_key(secret)
    shared = shared_point(secret, their_public)
    nonce_seed = sha256(DLEQ_DOMAIN + secret.to_bytes(32, "big") + bn254.compress(their_public))
    nonce = int.from_bytes(nonce_seed, "big") % R or 1
    t1, t2 = bn254.mul(G, nonce), bn254.mul(their_public, nonce)
    c = _challenge(mine, their_public, shared, t1, t2)
    return shared, SharedKeyProof(c, (nonce - c * secret) % R)


def verify_shared(public: Point, their_public: Point, shared: Point, proof: SharedKeyProof) -> bool:
    if public is None or their_public is None or shared is None:
        return False
    if not (0 <= proof.challenge < R and 0 <= proof.response < R):
        return False
    t1 = bn254.add(bn254.mul(G, proof.response), bn254.mul(public, proof.challenge))
    t2 = bn254.add(bn254.mul(their_public, proof.response), bn254.mul(shared, proof.challenge))
    return _challenge(public, their_public, shared, t1, t2) == proof.challenge
