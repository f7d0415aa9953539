"""Masks for private aggregation (consensus.masking): they cancel, hide, and are provable."""

from __future__ import annotations

import random

from consensus import bn254, masking
from consensus.bn254 import R
from consensus.crypto import sha256


def _members(n: int, seed: int) -> list[tuple[bytes, int]]:
    rng = random.Random(seed)
    return sorted((rng.randbytes(32), rng.randrange(1, R)) for _ in range(n))


def test_shared_points_agree_and_masks_cancel_in_the_sum() -> None:
    members = _members(4, 1)
    pubs = {who: masking.public_key(x) for who, x in members}
    context = sha256(b"selection")
    rng = random.Random(2)
    models = {who: [rng.randrange(-5000, 5000) for _ in range(30)] for who, _ in members}
    ys = []
    for who, x in members:
        pairs = []
        for other, _ in members:
            if other == who:
                continue
            shared = masking.shared_point(x, pubs[other])
            u = masking.expand(masking.pair_seed(shared, context), 30)
            pairs.append((masking.pair_sign(who, other), u))
        self_mask = masking.expand(masking.self_seed(who, context), 30)
        ys.append((masking.masked(masking.to_field(models[who]), pairs, self_mask), self_mask))
    total = masking.field_sum([y for y, _ in ys])
    unmasked = masking.field_sum([total, *[[-v % R for v in p] for _, p in ys]])
    want = [sum(models[w][t] for w, _ in members) for t in range(30)]
    assert masking.to_signed(unmasked) == want
    # one vector alone is not the model: its masks are full-size field elements
    first = masking.to_signed(ys[0][0])
    assert max(abs(v) for v in first) > R // 4


def test_a_shared_point_proof_verifies_and_a_wrong_point_does_not() -> None:
    (_, xa), (_, xb) = _members(2, 3)
    pa, pb = masking.public_key(xa), masking.public_key(xb)
    shared, proof = masking.prove_shared(xa, pb)
    assert shared == masking.shared_point(xb, pa)
    assert masking.verify_shared(pa, pb, shared, proof)
    wrong = bn254.add(shared, bn254.G)
    assert not masking.verify_shared(pa, pb, wrong, proof)
    assert not masking.verify_shared(pb, pa, shared, proof)  # not b's proof
    forged = masking.SharedKeyProof(proof.challenge, (proof.response + 1) % R)
    assert not masking.verify_shared(pa, pb, shared, forged)


def test_known_answers() -> None:
    """Pinned bytes of docs/protocol.md §10: a second implementation must match them."""
    seed = bytes(range(32))
    assert masking.expand(seed, 2) == [
        int.from_bytes(sha256(seed + bytes(4) + b"\x00") + sha256(seed + bytes(4) + b"\x01"), "big")
        % R,
        int.from_bytes(
            sha256(seed + b"\x00\x00\x00\x01\x00") + sha256(seed + b"\x00\x00\x00\x01\x01"), "big"
        )
        % R,
    ]
    pub = masking.public_key(7)
    assert bn254.compress(pub).hex() == KAT_PUB7
    shared = masking.shared_point(5, pub)
    assert masking.pair_seed(shared, bytes(32)).hex() == KAT_PAIR_SEED


KAT_PUB7 = "78e0ffab866b3a9876bd01b8ecc66fcb86936277f425539a758dbbd32e2b0717"  # 7*G, compressed
KAT_PAIR_SEED = (
    "519a98ba36fc5504ce78be2b52caece0a4b6ff887c7893ab2341eb876a534583"  # 35*G, zero context
)
