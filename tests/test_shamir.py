"""Verifiable secret sharing of a self seed (consensus.shamir, secagg's sealing): any t
shares give the secret, t - 1 do not pin it, a wrong share fails Feldman's check, and
a sealed share opens only for its holder."""

from __future__ import annotations

import itertools

import pytest

from consensus import bn254, masking, secagg, shamir
from consensus.errors import InvalidError


def test_any_t_shares_recover_the_secret_and_fewer_do_not() -> None:
    secret = 123456789 * 10**60 % bn254.R
    coeffs = shamir.coefficients(secret, b"dealer", 3)
    shares = {x: shamir.share(coeffs, x) for x in range(1, 6)}
    for xs in itertools.combinations(shares, 3):
        assert shamir.recover({x: shares[x] for x in xs}) == secret
    # two shares fit a line through any secret: what they give is not the secret
    assert shamir.recover({1: shares[1], 2: shares[2]}) != secret
    # the same dealer and seed deal the same shares (a re-run masks the same way)
    assert shamir.coefficients(secret, b"dealer", 3) == coeffs
    assert shamir.coefficients(secret, b"other", 3) != coeffs


def test_feldman_commitments_check_each_share() -> None:
    coeffs = shamir.coefficients(42, b"seed", 2)
    commits = shamir.commitments(coeffs)
    assert commits[0] == bn254.mul(bn254.G, 42)
    for x in (1, 2, 3):
        assert shamir.share_holds(shamir.share(coeffs, x), x, commits)
        assert not shamir.share_holds((shamir.share(coeffs, x) + 1) % bn254.R, x, commits)
        assert not shamir.share_holds(shamir.share(coeffs, x), x + 1, commits)
    assert not shamir.share_holds(bn254.R, 1, commits)  # not a field element


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidError):
        shamir.coefficients(bn254.R, b"", 2)
    with pytest.raises(InvalidError):
        shamir.coefficients(1, b"", 0)
    with pytest.raises(InvalidError):
        shamir.share([1, 2], 0)  # f(0) is the secret itself
    with pytest.raises(InvalidError):
        shamir.recover({})


def test_member_masks_share_the_self_seed_to_each_other_member() -> None:
    keys = sorted(bytes([i]) * 32 for i in (3, 1, 2))
    secrets = {k: secagg.mask_secret(k) for k in keys}
    publics = {k: secagg.mask_public(s) for k, s in secrets.items()}
    context = b"\x55" * 32
    dealer = keys[1]
    others = [(k, publics[k]) for k in keys if k != dealer]
    masks = secagg.member_masks(secrets[dealer], dealer, others, context, 4, 2)
    upd = secagg.unsigned_update(context, dealer, bytes(128), (), bytes(32), masks)
    assert len(masks.seed_commitments) == 2 and len(masks.seed_shares) == 2
    points = {}
    for (holder, _), sealed in zip(others, masks.seed_shares, strict=True):
        value = secagg.open_share(secrets[holder], holder, dealer, publics[dealer], context, sealed)
        assert secagg.share_holds(upd, keys, holder, value)
        points[secagg.share_x(keys, holder)] = value
        # another key opens garbage
        other = secagg.open_share(secrets[dealer], holder, dealer, publics[dealer], context, sealed)
        assert not secagg.share_holds(upd, keys, holder, other)
    assert secagg.recover_seed(points) == masks.self_seed
    assert masks.self_seed == masking.self_seed(secrets[dealer].to_bytes(32, "big"), context)
    assert int.from_bytes(masks.self_seed, "big") < bn254.R  # shareable: a field element
