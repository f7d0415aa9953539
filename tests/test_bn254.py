"""BN254 G1 arithmetic (consensus.bn254) against known vectors and an independent library."""

from __future__ import annotations

import random

import pytest
from py_ecc import bn128

from consensus import bn254
from consensus.errors import InvalidError

# 2G, from the curve's specification (EIP-196 test vectors use the same point).
TWO_G = (
    0x030644E72E131A029B85045B68181585D97816A916871CA8D3C208C16D87CFD3,
    0x15ED738C0E0A7C92E7845F96B2AE9C0A68A6A449E3538FC7FF3EBF7A5A18A2C4,
)


def _ref(pt: object) -> bn254.Point:
    if pt is None:
        return None
    x, y = pt  # type: ignore[misc]
    return (int(x), int(y))


def test_known_answers() -> None:
    assert bn254.add(bn254.G, bn254.G) == TWO_G
    assert bn254.mul(bn254.G, 2) == TWO_G
    assert bn254.mul(bn254.G, bn254.R) is None
    assert bn254.mul(bn254.G, bn254.R + 1) == bn254.G
    assert bn254.add(bn254.G, bn254.neg(bn254.G)) is None
    # compressed form: x little-endian, the parity of y in bit 7 of the last byte
    c = bn254.compress(TWO_G)
    assert c[:31] == TWO_G[0].to_bytes(32, "little")[:31]
    assert (c[31] >> 7) == (TWO_G[1] & 1)
    assert bn254.decompress(c) == TWO_G


def test_against_py_ecc() -> None:
    rng = random.Random(7)
    for _ in range(8):
        s, t = rng.randrange(bn254.R), rng.randrange(bn254.R)
        a, b = bn254.mul(bn254.G, s), bn254.mul(bn254.G, t)
        assert a == _ref(bn128.multiply(bn128.G1, s))
        assert bn254.add(a, b) == _ref(
            bn128.add(bn128.multiply(bn128.G1, s), bn128.multiply(bn128.G1, t))
        )
        assert bn254.sub(a, b) == bn254.mul(bn254.G, s - t)
        assert bn254.decompress(bn254.compress(a)) == a
        assert bn254.is_on_curve(a)


def test_msm_matches_naive_sum() -> None:
    rng = random.Random(1)
    points = [bn254.mul(bn254.G, rng.randrange(1, bn254.R)) for _ in range(40)]
    points[3] = None
    for scalars in (
        [rng.randrange(bn254.R) for _ in points],
        [rng.randrange(-500, 500) for _ in points],
        [0] * len(points),
    ):
        want = bn254.add(*[bn254.mul(p, s) for p, s in zip(points, scalars, strict=True)])
        assert bn254.msm(points, scalars) == want


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x01" * 31, "32 bytes"),
        (bytes(31) + b"\x40", "bit 6"),
        ((bn254.P).to_bytes(32, "little"), "below the field modulus"),
        ((4).to_bytes(32, "little"), "not on the curve"),  # 4^3 + 3 = 67 is not a square mod p
    ],
)
def test_bad_encodings_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(InvalidError, match=why):
        bn254.decompress(data)


def test_identity_encoding() -> None:
    assert bn254.compress(None) == bytes(32)
    assert bn254.decompress(bytes(32)) is None
    assert not bn254.is_on_curve((0, 0))  # x = 0 is not on the curve: the encoding is unambiguous
