"""Verifiable t-of-n secret sharing of a self-mask seed (protocol v5, docs/protocol.md §14).

Shamir's scheme over the BN254 scalar field with Feldman's commitments: the dealer's
polynomial f(z) = s + c_1 z + ... + c_{t-1} z^{t-1} (mod R) hides s = f(0); member j
gets f(j); the commitments F_k = c_k G (F_0 = s G) let anyone check a revealed share
against the dealer's signed message, so a wrong share names its sender (or the dealer)
without a trusted party. Any t shares give s by Lagrange interpolation at 0; fewer
than t say nothing about it. Dropout recovery (Bonawitz et al., CCS 2017) uses this
to finish a sum whose member went silent after Complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from consensus import bn254
from consensus.bn254 import G, Point, R
from consensus.crypto import sha256
from consensus.errors import InvalidError

COEFF_DOMAIN = b"zkpot/share-coeff/v5"


def coefficients(secret: int, seed: bytes, t: int) -> list[int]:
    """[s, c_1, ..., c_{t-1}]: the higher coefficients from `seed` (a secret only the
    dealer holds), so a dealer that masks the same selection twice deals the same shares."""
    if not 0 <= secret < R:
        raise InvalidError("a shared secret must be a field element")
    if t < 1:
        raise InvalidError("a sharing threshold is at least 1")
    rest = [
        int.from_bytes(sha256(COEFF_DOMAIN + seed + k.to_bytes(4, "big")), "big") % R
        for k in range(1, t)
    ]
    return [secret, *rest]


def share(coeffs: Sequence[int], x: int) -> int:
    """f(x), by Horner's rule; x is a member's 1-based position, never 0 (that is s)."""
    if not 1 <= x < R:
        raise InvalidError("a share's point must be in [1, R)")
    out = 0
    for c in reversed(coeffs):
        out = (out * x + c) % R
    return out


def commitments(coeffs: Sequence[int]) -> list[Point]:
    return [bn254.mul(G, c) for c in coeffs]


def share_holds(value: int, x: int, commits: Sequence[Point]) -> bool:
    """Feldman's check: value G == sum_k x^k F_k."""
    if not 0 <= value < R or not 1 <= x < R:
        return False
    powers = [pow(x, k, R) for k in range(len(commits))]
    return bn254.mul(G, value) == bn254.msm(list(commits), powers)


def recover(shares: Mapping[int, int]) -> int:
    """f(0) from shares {x: f(x)} (at least t of them, distinct nonzero x)."""
    if not shares or any(not 1 <= x < R for x in shares):
        raise InvalidError("recovery needs shares at distinct points in [1, R)")
    total = 0
    for xi, yi in shares.items():
        num, den = 1, 1
        for xj in shares:
            if xj != xi:
                num = num * xj % R
                den = den * (xj - xi) % R
        total = (total + yi * num * pow(den, -1, R)) % R
    return total
