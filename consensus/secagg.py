"""Protocol v2's aggregation round: its messages and the pure functions members and the
aggregator run (double masking as in Bonawitz et al., CCS 2017; consensus.masking).

Once the proofs are in, the proposer (the aggregator) publishes a `Selection`: the
proofs its block will carry and the members the rule selects from them, with an
attempt number. Each member answers with a `MaskedUpdate`: y_i = a_i*q_i + sum of
signed pairwise masks + a self mask, with the commitments L(u_ij) of its pairwise
masks and L(p_i) of its self mask, so that anyone can check its vector alone:
L(y_i) = a_i*(C_i - K) + sum_j s(i,j)*L(u_ij) + L(p_i). When every member's vector
is in, the aggregator publishes `Complete`; a member reveals its self-mask seed
(`Unmask`) for at most one Complete per round, so no two sums that differ by one
member are ever both computable. A member that stays silent before Complete is
left out by a new attempt with fresh masks (the context is the Selection's hash).

Version 5 (dropout recovery, §14): each MaskedUpdate also deals Feldman-verified Shamir
shares of the member's self seed to the others (consensus.shamir), sealed to each; a
member silent after Complete has its seed recovered from t revealed `SeedShare`s.

Version 7 (models above one gossip message): a vector of more than PART_LEN elements
travels in parts of PART_LEN. The MaskedUpdate carries part 0 in `vector` and signs the
sha256 of every later part in `parts`; each later part is a `VectorPart` that anyone can
check against that signed list, so a part binds to its member's update as the vector
itself did, and Complete (which lists update hashes) binds every part.

Vectors are `FIELD_BYTES` little-endian field elements each, below R.
docs/protocol.md §10, §14 and §15 specify every byte. (Past 300 lines on purpose: the
messages and the arithmetic that gives their fields meaning are one spec section.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from consensus import bn254, masking, shamir
from consensus.crypto import HASH_LEN, PUBKEY_LEN, SIG_LEN, UNSIGNED, sha256
from consensus.encoding import Bytes, ListOf, Signed, UInt, Wire, wire
from consensus.errors import InvalidError
from consensus.types import MAX_NUM_BATCHES, MAX_PARTICIPANTS, MAX_REMAINDER, POINT_LEN

FIELD_BYTES = 32
MAX_ATTEMPTS = 8  # a round gives up aggregating after this many attempts
MAX_VECTOR_BYTES = 600 * 1024  # one part fits one gossip message (p2p.topics.MAX_GOSSIP_PAYLOAD)
PART_LEN = MAX_VECTOR_BYTES // FIELD_BYTES  # elements per part (v7): 19,200
MAX_PARTS = -(-MAX_REMAINDER // PART_LEN)  # 4: the largest model an averaging rule carries
SHARE_PAD_DOMAIN = b"zkpot/share-pad/v5"

_HASH = Bytes(HASH_LEN, HASH_LEN)
_KEY = Bytes(PUBKEY_LEN, PUBKEY_LEN)
_SIG = Bytes(SIG_LEN, SIG_LEN)
_POINT = Bytes(POINT_LEN, POINT_LEN)
_ROUND = UInt(0, MAX_NUM_BATCHES - 1)


@dataclass(frozen=True)
class Selection(Signed):
    """The aggregator's call: these proofs, these members, this attempt."""

    TAG = 7
    NAME = "Selection"
    MAX_BYTES = MAX_PARTICIPANTS * (HASH_LEN + PUBKEY_LEN + 4) + 256

    round: int = wire(_ROUND)
    parent: bytes = wire(_HASH)
    proposer: bytes = wire(_KEY)
    attempt: int = wire(UInt(0, MAX_ATTEMPTS - 1))
    proofs: tuple[bytes, ...] = wire(ListOf(_HASH, MAX_PARTICIPANTS, lo=1, strictly_sorted=True))
    members: tuple[bytes, ...] = wire(ListOf(_KEY, MAX_PARTICIPANTS, lo=1, strictly_sorted=True))
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class MaskedUpdate(Signed):
    """A member's masked vector and the commitments that let anyone check it alone.

    `pair_commitments[t]` is L(u) of the pairwise mask with the t-th other member (in
    the Selection's member order, this member skipped). Version 5: `seed_commitments`
    are the Feldman commitments of the sharing of its self seed (`threshold` points) and
    `seed_shares[t]` the t-th other member's share, encrypted to it."""

    TAG = 8
    NAME = "MaskedUpdate"
    MAX_BYTES = (
        MAX_VECTOR_BYTES + 3 * MAX_PARTICIPANTS * (POINT_LEN + 4) + MAX_PARTS * (HASH_LEN + 4) + 512
    )

    selection: bytes = wire(_HASH)
    member: bytes = wire(_KEY)
    vector: bytes = wire(Bytes(FIELD_BYTES, MAX_VECTOR_BYTES))
    pair_commitments: tuple[bytes, ...] = wire(ListOf(_POINT, MAX_PARTICIPANTS - 1))
    self_commitment: bytes = wire(_POINT)
    seed_commitments: tuple[bytes, ...] = wire(ListOf(_POINT, MAX_PARTICIPANTS))
    seed_shares: tuple[bytes, ...] = wire(
        ListOf(Bytes(FIELD_BYTES, FIELD_BYTES), MAX_PARTICIPANTS - 1)
    )
    # v7: sha256 of each later part of the vector (`vector` is part 0)
    parts: tuple[bytes, ...] = wire(ListOf(_HASH, MAX_PARTS - 1), since=7, default=())
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class VectorPart(Wire):
    """Version 7: part `index` (1-based past part 0) of a member's masked vector. Not
    signed: its hash is in the member's signed update, which `update` names."""

    TAG = 24
    NAME = "VectorPart"
    MAX_BYTES = MAX_VECTOR_BYTES + 128

    selection: bytes = wire(_HASH)
    update: bytes = wire(_HASH)
    index: int = wire(UInt(1, MAX_PARTS - 1))
    data: bytes = wire(Bytes(FIELD_BYTES, MAX_VECTOR_BYTES))


@dataclass(frozen=True)
class Complete(Signed):
    """Every member's vector is in: the hashes of the updates, in member order."""

    TAG = 9
    NAME = "Complete"
    MAX_BYTES = MAX_PARTICIPANTS * (HASH_LEN + 4) + 256

    selection: bytes = wire(_HASH)
    updates: tuple[bytes, ...] = wire(ListOf(_HASH, MAX_PARTICIPANTS, lo=1))
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class Unmask(Signed):
    """A member's self-mask seed for one completed selection (never two in a round)."""

    TAG = 16
    NAME = "Unmask"
    MAX_BYTES = 256

    selection: bytes = wire(_HASH)
    member: bytes = wire(_KEY)
    seed: bytes = wire(_HASH)
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class Dispute(Signed):
    """The aggregator's call: these pairs of members committed different points for
    their shared mask, so this selection is abandoned and each pair should show whose
    commitment is right. `pairs[t]` is the two members' keys, the smaller first."""

    TAG = 17
    NAME = "Dispute"
    MAX_BYTES = MAX_PARTICIPANTS * (2 * PUBKEY_LEN + 4) + 256

    selection: bytes = wire(_HASH)
    pairs: tuple[bytes, ...] = wire(
        ListOf(Bytes(2 * PUBKEY_LEN, 2 * PUBKEY_LEN), MAX_PARTICIPANTS, lo=1, strictly_sorted=True)
    )
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class PairReveal(Signed):
    """A disputed pair's shared point x_i*X_j, with a Chaum-Pedersen proof that it is
    (consensus.masking): anyone can then expand the pair's true mask for the selection."""

    TAG = 18
    NAME = "PairReveal"
    MAX_BYTES = 512

    selection: bytes = wire(_HASH)
    member: bytes = wire(_KEY)
    partner: bytes = wire(_KEY)
    shared: bytes = wire(_POINT)
    challenge: bytes = wire(Bytes(FIELD_BYTES, FIELD_BYTES))  # big-endian, below R
    response: bytes = wire(Bytes(FIELD_BYTES, FIELD_BYTES))
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class SeedShare(Signed):
    """Version 5: a member's share of another member's self seed for a completed
    selection whose `owner` did not unmask (dropout recovery): `threshold` of them give
    the seed, so the survivors' sum is finished without the silent member."""

    TAG = 22
    NAME = "SeedShare"
    MAX_BYTES = 256

    selection: bytes = wire(_HASH)
    member: bytes = wire(_KEY)
    owner: bytes = wire(_KEY)
    update: bytes = wire(_HASH)  # the owner's MaskedUpdate the share was opened from
    share: bytes = wire(Bytes(FIELD_BYTES, FIELD_BYTES))  # big-endian, below R
    signature: bytes = wire(_SIG, default=UNSIGNED)


AggMessage = (
    Selection | MaskedUpdate | VectorPart | Complete | Unmask | Dispute | PairReveal | SeedShare
)


# --------------------------------------------------------------------------- vectors


def encode_vector(values: Sequence[int]) -> bytes:
    return b"".join((v % bn254.R).to_bytes(FIELD_BYTES, "little") for v in values)


def decode_vector(data: bytes, length: int) -> list[int]:
    if len(data) != FIELD_BYTES * length:
        raise InvalidError(
            f"a masked vector is {FIELD_BYTES * length} bytes for {length} parameters, "
            f"got {len(data)}"
        )
    out = [
        int.from_bytes(data[i : i + FIELD_BYTES], "little")
        for i in range(0, len(data), FIELD_BYTES)
    ]
    if any(v >= bn254.R for v in out):
        raise InvalidError("a masked vector element is not below the field modulus")
    return out


def part_count(length: int) -> int:
    """How many parts a vector of `length` elements travels in (v7; 1 up to PART_LEN)."""
    return max(1, -(-length // PART_LEN))


def part_bytes(length: int, index: int) -> int:
    """The size of part `index` of a vector of `length` elements."""
    return FIELD_BYTES * (min(length, PART_LEN * (index + 1)) - PART_LEN * index)


def split_update(unsigned: MaskedUpdate) -> tuple[MaskedUpdate, tuple[bytes, ...]]:
    """A whole-vector update as it travels: part 0 in `vector`, the hashes of the later
    parts in `parts` (sign it after this), and those parts' data."""
    step = FIELD_BYTES * PART_LEN
    chunks = [unsigned.vector[i : i + step] for i in range(0, len(unsigned.vector), step)]
    rest = tuple(chunks[1:])
    return replace(unsigned, vector=chunks[0], parts=tuple(sha256(c) for c in rest)), rest


def vector_parts(upd: MaskedUpdate, rest: Sequence[bytes]) -> tuple[VectorPart, ...]:
    """The VectorParts of a signed update (`rest`: split_update's data)."""
    h = upd.hash()
    return tuple(VectorPart(upd.selection, h, i, d) for i, d in enumerate(rest, start=1))


def whole_vector(upd: MaskedUpdate, rest: Sequence[bytes]) -> bytes:
    """The member's whole vector from its update and the data of its later parts, in
    order; InvalidError unless each is the part the update signed."""
    if len(rest) != len(upd.parts) or any(
        sha256(d) != h for d, h in zip(rest, upd.parts, strict=True)
    ):
        raise InvalidError("the vector's parts are not the ones its update signed")
    return upd.vector + b"".join(rest)


def mask_secret(seed: bytes) -> int:
    """A round's mask key secret from 32 random bytes (never 0)."""
    return int.from_bytes(seed, "big") % (bn254.R - 1) + 1


def mask_public(secret: int) -> bytes:
    return bn254.compress(masking.public_key(secret))


def threshold(min_members: int, members: int) -> int:
    """Shares that recover a self seed in a set of `members`: at least the chain's
    collusion threshold min_members - 1 (docs/protocol.md §10; a set of min_members
    survives one dropout) and more than half the set, so opening a seed without its
    owner, or a sum nobody unmasked, takes a majority of the set, not two colluders."""
    return max(1, min_members - 1, members // 2 + 1)


@dataclass(frozen=True)
class MemberMasks:
    """What a member adds to its weighted model (signed pairwise masks and its self mask)
    and the verifiable sharing of its self seed (version 5)."""

    pair_masks: tuple[tuple[int, tuple[int, ...]], ...]  # (sign, u) per other member
    self_seed: bytes
    self_mask: tuple[int, ...]
    seed_commitments: tuple[bytes, ...]  # compressed Feldman commitments F_0..F_{t-1}
    seed_shares: tuple[bytes, ...]  # per other member, encrypted to it (seal_share)


def member_masks(
    secret: int,
    me: bytes,
    others: Sequence[tuple[bytes, bytes]],
    context: bytes,
    length: int,
    threshold: int,
) -> MemberMasks:
    """The masks of member `me` (mask key `secret`) for the selection `context`;
    `others` are the other members' (key, compressed mask public key), in member order."""
    pairs = []
    points = []
    for key, public in others:
        shared = masking.shared_point(secret, bn254.decompress(public))
        points.append(shared)
        u = masking.expand(masking.pair_seed(shared, context), length)
        pairs.append((masking.pair_sign(me, key), tuple(u)))
    seed = masking.self_seed(secret.to_bytes(32, "big"), context)
    coeffs = shamir.coefficients(
        int.from_bytes(seed, "big"), secret.to_bytes(32, "big") + context, threshold
    )
    members = sorted([me, *(key for key, _ in others)])
    shares = tuple(
        seal_share(shared, context, me, key, shamir.share(coeffs, share_x(members, key)))
        for (key, _), shared in zip(others, points, strict=True)
    )
    return MemberMasks(
        tuple(pairs),
        seed,
        tuple(masking.expand(seed, length)),
        tuple(bn254.compress(p) for p in shamir.commitments(coeffs)),
        shares,
    )


def unsigned_update(
    context: bytes,
    me: bytes,
    vector: bytes,
    pair_commitments: tuple[bytes, ...],
    self_commitment: bytes,
    masks: MemberMasks,
) -> MaskedUpdate:
    """A member's MaskedUpdate before its signature, with the sharing of its seed."""
    return MaskedUpdate(
        context,
        me,
        vector,
        pair_commitments,
        self_commitment,
        masks.seed_commitments,
        masks.seed_shares,
    )


def share_x(members: Sequence[bytes], who: bytes) -> int:
    """The point a member's share of another's seed is at: its 1-based position."""
    return list(members).index(who) + 1


def _share_pad(shared: bn254.Point, context: bytes, dealer: bytes, holder: bytes) -> bytes:
    return sha256(SHARE_PAD_DOMAIN + bn254.compress(shared) + context + dealer + holder)


def seal_share(
    shared: bn254.Point, context: bytes, dealer: bytes, holder: bytes, value: int
) -> bytes:
    """A share encrypted to its holder with a one-time pad from the pair's shared point,
    the selection and both keys (each pad is used once: one share per dealer, holder and
    selection); the dealer's signature on its update authenticates it."""
    pad = _share_pad(shared, context, dealer, holder)
    return bytes(a ^ b for a, b in zip(value.to_bytes(FIELD_BYTES, "big"), pad, strict=True))


def open_share(
    secret: int, holder: bytes, dealer: bytes, dealer_public: bytes, context: bytes, sealed: bytes
) -> int:
    """The holder's share of the dealer's seed (may be garbage: check it with
    shamir.share_holds against the dealer's seed commitments)."""
    shared = masking.shared_point(secret, bn254.decompress(dealer_public))
    pad = _share_pad(shared, context, dealer, holder)
    return int.from_bytes(bytes(a ^ b for a, b in zip(sealed, pad, strict=True)), "big")


def share_holds(upd: MaskedUpdate, members: Sequence[bytes], holder: bytes, value: int) -> bool:
    """Whether `value` is the dealer's (upd.member's) share for `holder`, by the
    commitments in the dealer's signed update."""
    try:
        commits = [bn254.decompress(c) for c in upd.seed_commitments]
    except InvalidError:
        return False
    return shamir.share_holds(value, share_x(members, holder), commits)


def recover_seed(shares: Mapping[int, int]) -> bytes:
    """A self seed from `threshold` verified shares {x: value}."""
    return shamir.recover(shares).to_bytes(FIELD_BYTES, "big")


def unmasked_sum(vectors: Sequence[Sequence[int]], self_seeds: Sequence[bytes]) -> list[int]:
    """sum y_i - sum p_i over the field, as signed integers: W = sum a_i*q_i once the
    pairwise masks have cancelled (every member of the selection is in the sum)."""
    if len(vectors) != len(self_seeds) or not vectors:
        raise InvalidError("one self-mask seed per vector, and at least one vector")
    length = len(vectors[0])
    total = masking.field_sum(vectors)
    for seed in self_seeds:
        p = masking.expand(seed, length)
        total = [(a - b) % bn254.R for a, b in zip(total, p, strict=True)]
    return masking.to_signed(total)


def others_of(members: Sequence[bytes], me: bytes) -> list[bytes]:
    return [m for m in members if m != me]


def pair_signs(members: Sequence[bytes], me: bytes) -> tuple[int, ...]:
    """The signs of member `me`'s pairwise masks, in its update's order (what checking
    its vector against its commitments needs)."""
    return tuple(masking.pair_sign(me, o) for o in others_of(members, me))


def expected_update(
    weighted_commitment: bn254.Point,
    pair_commitments: Sequence[bn254.Point],
    signs: Sequence[int],
    self_commitment: bn254.Point,
) -> bn254.Point:
    """What L(y_i) must be: a_i*(C_i - K) + sum s(i,j)*L(u_ij) + L(p_i)."""
    total = bn254.add(weighted_commitment, self_commitment)
    for sign, point in zip(signs, pair_commitments, strict=True):
        total = bn254.add(total, point if sign > 0 else bn254.neg(point))
    return total


def pair_commitment(
    updates: Mapping[bytes, MaskedUpdate], members: Sequence[bytes], i: bytes, j: bytes
) -> bytes:
    """What member i committed for its pairwise mask with j."""
    return updates[i].pair_commitments[others_of(members, i).index(j)]


def disputed_pairs(updates: Mapping[bytes, MaskedUpdate], members: Sequence[bytes]) -> list[bytes]:
    """The pairs (as `pair_id`s) whose two members committed different points for their
    shared mask: the mask of a pair is one vector, so both must commit the same L(u)."""
    return [
        pair_id(i, j)
        for i in members
        for j in members
        if i < j
        and pair_commitment(updates, members, i, j) != pair_commitment(updates, members, j, i)
    ]


def pair_id(a: bytes, b: bytes) -> bytes:
    """A Dispute's name for a pair: both keys, the smaller first."""
    return min(a, b) + max(a, b)


def pair_of(pid: bytes) -> tuple[bytes, bytes]:
    return pid[:PUBKEY_LEN], pid[PUBKEY_LEN:]


def reveal_pair(
    secret: int, me: bytes, partner: bytes, their_public: bytes, context: bytes
) -> PairReveal:
    """Our shared point with `partner` and its proof, unsigned."""
    shared, proof = masking.prove_shared(secret, bn254.decompress(their_public))
    return PairReveal(
        context,
        me,
        partner,
        bn254.compress(shared),
        proof.challenge.to_bytes(FIELD_BYTES, "big"),
        proof.response.to_bytes(FIELD_BYTES, "big"),
    )


def reveal_holds(reveal: PairReveal, member_public: bytes, partner_public: bytes) -> bool:
    """Whether a PairReveal's point is the pair's shared point (its proof checks against
    the two mask keys the members published in their commits)."""
    try:
        mine, theirs = bn254.decompress(member_public), bn254.decompress(partner_public)
        shared = bn254.decompress(reveal.shared)
    except InvalidError:
        return False
    proof = masking.SharedKeyProof(
        int.from_bytes(reveal.challenge, "big"), int.from_bytes(reveal.response, "big")
    )
    return masking.verify_shared(mine, theirs, shared, proof)


def true_pair_seed(reveal: PairReveal) -> bytes:
    """The seed of the pair's mask for the disputed selection, from a revealed point."""
    return masking.pair_seed(bn254.decompress(reveal.shared), reveal.selection)
