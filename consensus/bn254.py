"""BN254 G1 arithmetic: the little there is to check aggregates against weight commitments.

A weight commitment is affine in the quantised weights, C(q) = L(q) + K (docs/protocol.md
§10), so every node checks a published aggregate with a handful of point additions and
scalar multiplications, and a member's masked vector with one multi-scalar
multiplication over the circuit's basis points. Pure Python integers: deterministic on
every machine, and small enough to read next to the spec. G1 of BN254 is
y^2 = x^3 + 3 over F_p with prime order R (cofactor 1: every curve point is in the group).

Encoding (ezkl's compressed form): 32 bytes, x little-endian; bit 7 of the last byte is
the parity of y; bit 6 must be 0; the identity is 32 zero bytes (x = 0 is not on the
curve, since 3 is not a square mod p, so no curve point encodes that way).
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.errors import InvalidError

P = 21888242871839275222246405745257275088696311157297823662689037894645226208583
R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
B = 3
G = (1, 2)  # the generator

Point = tuple[int, int] | None  # affine; None is the identity
_Jac = tuple[int, int, int]  # Jacobian (X, Y, Z): x = X/Z^2, y = Y/Z^3; Z = 0 is the identity
_INF: _Jac = (1, 1, 0)


def is_on_curve(pt: Point) -> bool:
    if pt is None:
        return True
    x, y = pt
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x - B) % P == 0


def decompress(data: bytes) -> Point:
    if len(data) != 32:
        raise InvalidError(f"a compressed point is 32 bytes, got {len(data)}")
    if data == bytes(32):
        return None
    if data[31] & 0x40:
        raise InvalidError("compressed point: bit 6 of the last byte must be 0")
    odd = data[31] >> 7
    x = int.from_bytes(data[:31] + bytes([data[31] & 0x3F]), "little")
    if x >= P:
        raise InvalidError("compressed point: x is not below the field modulus")
    v = (x * x * x + B) % P
    y = pow(v, (P + 1) // 4, P)  # P = 3 mod 4
    if y * y % P != v:
        raise InvalidError("compressed point: x is not on the curve")
    if y & 1 != odd:
        y = P - y
    return (x, y)


def compress(pt: Point) -> bytes:
    if pt is None:
        return bytes(32)
    x, y = pt
    out = bytearray(x.to_bytes(32, "little"))
    out[31] |= (y & 1) << 7
    return bytes(out)


def _to_jac(pt: Point) -> _Jac:
    return _INF if pt is None else (pt[0], pt[1], 1)


def _from_jac(pt: _Jac) -> Point:
    x, y, z = pt
    if z == 0:
        return None
    zi = pow(z, P - 2, P)
    zi2 = zi * zi % P
    return (x * zi2 % P, y * zi2 * zi % P)


def _dbl(pt: _Jac) -> _Jac:
    x, y, z = pt
    if z == 0 or y == 0:
        return _INF
    yy = y * y % P
    s = 4 * x * yy % P
    m = 3 * x * x % P
    nx = (m * m - 2 * s) % P
    ny = (m * (s - nx) - 8 * yy * yy) % P
    return (nx, ny, 2 * y * z % P)


def _add(p1: _Jac, p2: _Jac) -> _Jac:
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1, z2z2 = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2z2 % P, x2 * z1z1 % P
    s1, s2 = y1 * z2 * z2z2 % P, y2 * z1 * z1z1 % P
    if u1 == u2:
        return _dbl(p1) if s1 == s2 else _INF
    h, r = (u2 - u1) % P, (s2 - s1) % P
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    nx = (r * r - hhh - 2 * v) % P
    ny = (r * (v - nx) - s1 * hhh) % P
    return (nx, ny, z1 * z2 * h % P)


def neg(pt: Point) -> Point:
    return None if pt is None else (pt[0], (P - pt[1]) % P)


def add(*points: Point) -> Point:
    acc = _INF
    for pt in points:
        acc = _add(acc, _to_jac(pt))
    return _from_jac(acc)


def sub(a: Point, b: Point) -> Point:
    return add(a, neg(b))


def _mul_jac(pt: _Jac, scalar: int) -> _Jac:
    acc = _INF
    for bit in bin(scalar)[2:] if scalar else "":
        acc = _dbl(acc)
        if bit == "1":
            acc = _add(acc, pt)
    return acc


def mul(pt: Point, scalar: int) -> Point:
    """scalar * pt for any integer scalar (taken mod the group order R)."""
    return _from_jac(_mul_jac(_to_jac(pt), scalar % R))


def msm(points: Sequence[Point], scalars: Sequence[int]) -> Point:
    """sum scalars[j] * points[j], by Pippenger's bucket method (scalars mod R)."""
    if len(points) != len(scalars):
        raise ValueError("msm: one scalar per point")
    pairs: list[tuple[_Jac, int]] = []
    for pt, scalar in zip(points, scalars, strict=True):
        s = scalar % R
        if s > R // 2:  # a small negative scalar: negate the point, keep the scalar short
            pt, s = neg(pt), R - s
        if s and pt is not None:
            pairs.append((_to_jac(pt), s))
    if not pairs:
        return None
    bits = max(s.bit_length() for _, s in pairs)
    c = 4 if len(pairs) < 32 else 6 if len(pairs) < 512 else 8
    mask = (1 << c) - 1
    acc = _INF
    for shift in range(((bits + c - 1) // c - 1) * c, -1, -c):
        for _ in range(c):
            acc = _dbl(acc)
        buckets: list[_Jac] = [_INF] * (mask + 1)
        for p, s in pairs:
            d = (s >> shift) & mask
            if d:
                buckets[d] = _add(buckets[d], p)
        running, window = _INF, _INF
        for d in range(mask, 0, -1):
            running = _add(running, buckets[d])
            window = _add(window, running)
        acc = _add(acc, window)
    return _from_jac(acc)
