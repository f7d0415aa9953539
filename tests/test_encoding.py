"""Canonical encoding: round-trips, and every malformed or non-canonical input is a DecodeError."""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.encoding import UInt, Wire, pack, peek_tag, wire
from consensus.errors import DecodeError
from consensus.types import Block, CommitTx, EvalBatch, Genesis, ProofTx, Reveal
from support.chainfactory import make_chain

CHAIN = make_chain()
BLOCK, _ = CHAIN.round_block(0, CHAIN.chain_id, 1, {0: 3, 1: 2, 2: 1})
SAMPLES = [
    CHAIN.genesis,
    BLOCK,
    BLOCK.reveal,
    BLOCK.commits[0],
    BLOCK.proofs[0],
    BLOCK.reveal.batch,
]
TYPES = [Genesis, Block, Reveal, CommitTx, ProofTx, EvalBatch]

hashes = st.binary(min_size=32, max_size=32)


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trip_gives_identical_object_and_bytes(obj: object) -> None:
    data = obj.encode()  # type: ignore[attr-defined]
    back = type(obj).decode(data)  # type: ignore[attr-defined]
    assert back == obj
    assert back.encode() == data
    assert back.hash() == obj.hash()  # type: ignore[attr-defined]


@given(
    rnd=st.integers(0, (1 << 20) - 1),
    parent=hashes,
    who=hashes,
    binding=hashes,
    sig=st.binary(min_size=64, max_size=64),
)
def test_commit_round_trip_any_values(
    rnd: int, parent: bytes, who: bytes, binding: bytes, sig: bytes
) -> None:
    tx = CommitTx(rnd, parent, who, binding, sig)
    assert CommitTx.decode(tx.encode()) == tx


@given(
    k=st.integers(0, 1024),
    proof=st.binary(min_size=1, max_size=5000),
    cid=hashes,
    c=st.binary(min_size=1, max_size=300),
)
def test_proof_round_trip_any_values(k: int, proof: bytes, cid: bytes, c: bytes) -> None:
    tx = ProofTx(5, cid, bytes(32), c, k, proof, bytes(64))
    assert ProofTx.decode(tx.encode()) == tx


def test_non_minimal_integer_is_rejected() -> None:
    tx = BLOCK.commits[0]
    obj = tx.to_obj()
    good = msgpack.packb(obj, use_bin_type=True)
    # round 0 is the positive fixint 0x00 at index 3 (after array header, tag, version):
    # re-encode it as uint8 0xcc 0x00, which decodes to the same value.
    assert good[3] == 0x00
    bad = good[:3] + b"\xcc\x00" + good[4:]
    assert msgpack.unpackb(bad) == msgpack.unpackb(good)
    with pytest.raises(DecodeError, match="non-canonical"):
        CommitTx.decode(bad)


def test_bin32_header_for_short_bytes_is_rejected() -> None:
    tx = BLOCK.commits[0]
    good = tx.encode()
    i = good.index(b"\xc4\x20" + tx.parent)  # bin8 header of the 32-byte parent
    bad = good[:i] + b"\xc6" + struct.pack(">I", 32) + good[i + 2 :]
    with pytest.raises(DecodeError, match="non-canonical"):
        CommitTx.decode(bad)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: [*o, 1], "expected 7 elements"),
        (lambda o: o[:-1], "expected 7 elements"),
        (lambda o: [99, *o[1:]], "type tag"),
        (lambda o: [o[0], 3, *o[2:]], "version"),  # CommitTx knows versions 1 and 2
        (lambda o: [*o[:2], 1.0, *o[3:]], "expected an integer"),
        (lambda o: [*o[:2], True, *o[3:]], "expected an integer"),
        (lambda o: [*o[:2], None, *o[3:]], "expected an integer"),
        (lambda o: [*o[:2], -1, *o[3:]], "outside"),
        (lambda o: [*o[:3], b"short", *o[4:]], "length 5"),
        (lambda o: [*o[:3], "a" * 32, *o[4:]], "expected bytes"),
        (lambda o: [*o[:5], b"", o[6]], "length 0"),
    ],
)
def test_malformed_fields_are_rejected_with_a_reason(mutate: object, message: str) -> None:
    obj = BLOCK.commits[0].to_obj()
    data = msgpack.packb(mutate(obj), use_bin_type=True)  # type: ignore[operator]
    with pytest.raises(DecodeError, match=message):
        CommitTx.decode(data)


def test_map_instead_of_array_is_rejected() -> None:
    with pytest.raises(DecodeError):
        CommitTx.decode(msgpack.packb({"round": 1}))


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="malformed"):
        CommitTx.decode(BLOCK.commits[0].encode() + b"\x00")


def test_truncated_message_is_rejected() -> None:
    data = BLOCK.encode()
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            Block.decode(data[:cut])


def test_oversized_message_is_rejected_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit"):
        CommitTx.decode(b"\x00" * (CommitTx.MAX_BYTES + 1))


def test_unsorted_participants_are_rejected() -> None:
    obj = CHAIN.genesis.to_obj()
    obj[5] = list(reversed(obj[5]))
    with pytest.raises(DecodeError, match="strictly ascending"):
        Genesis.decode(msgpack.packb(obj, use_bin_type=True))


def test_non_ascii_name_is_rejected() -> None:
    obj = CHAIN.genesis.to_obj()
    obj[2] = "t\u00e9st"
    with pytest.raises(DecodeError, match="printable ASCII"):
        Genesis.decode(msgpack.packb(obj, use_bin_type=True))


def test_nested_object_of_wrong_type_is_rejected() -> None:
    obj = BLOCK.to_obj()
    obj[7] = BLOCK.commits[0].to_obj()  # a commit where the reveal belongs
    with pytest.raises(DecodeError, match=r"Block\.reveal"):
        Block.decode(msgpack.packb(obj, use_bin_type=True))


@settings(max_examples=300)
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    for cls in TYPES:
        with contextlib.suppress(DecodeError):
            cls.decode(data)


@settings(max_examples=300)
@given(pos=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_single_byte_corruption_raises_decode_error_or_changes_the_hash(
    pos: int, byte: int
) -> None:
    data = bytearray(BLOCK.encode())
    pos %= len(data)
    if data[pos] == byte:
        return
    data[pos] = byte
    try:
        back = Block.decode(bytes(data))
    except DecodeError:
        return
    assert back.hash() != BLOCK.hash()


# ---------------------------------------------------------------------- peek_tag


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_peek_tag_reads_the_tag_of_every_protocol_object(obj: object) -> None:
    assert peek_tag(obj.encode()) == type(obj).TAG  # type: ignore[attr-defined]


@given(tag=st.integers(0, 127), fields=st.integers(0, 40))
def test_peek_tag_reads_fixarrays_and_array16s(tag: int, fields: int) -> None:
    data = msgpack.packb([tag, 1, *range(fields)])
    assert data[0] == (0x92 + fields if fields <= 13 else 0xDC)
    assert peek_tag(data) == tag


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x92",  # header only
        msgpack.packb([]),
        msgpack.packb([10]),  # a tag without a version
        b"\xdc\x00\x03\x0a\x01\x00",  # array16 of 3: fixarray is canonical
        msgpack.packb([200, 1]),  # 200 is a uint8, not a positive fixint: no TAG is
        msgpack.packb([-1, 1]),
        msgpack.packb(["x", 1]),
        msgpack.packb({10: 1}),
        b"\xdd\x00\x00\x00\x02\x0a\x01",  # array32
    ],
)
def test_peek_tag_is_none_for_what_no_canonical_encoding_starts_with(data: bytes) -> None:
    assert peek_tag(data) is None


def test_every_wire_tag_is_one_peek_tag_can_read() -> None:
    import p2p.gossip
    import p2p.sync

    def subclasses(cls: type[Wire]) -> list[type[Wire]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    tagged = [c for c in subclasses(Wire) if "TAG" in vars(c)]
    assert {p2p.sync.Status, p2p.gossip.BlockAnnounce, Block} <= set(tagged)
    assert all(0 <= c.TAG < 0x80 for c in tagged), [(c.__name__, c.TAG) for c in tagged]


@dataclass(frozen=True)
class _Grown(Wire):
    """A type that gained a field in version 2."""

    TAG = 120
    NAME = "Grown"
    MAX_BYTES = 64

    a: int = wire(UInt(0, 9))
    b: int = wire(UInt(0, 9), since=2, default=0)


def test_a_field_added_later_keeps_old_encodings_and_their_hashes() -> None:
    old = _Grown(3)
    assert old.encode() == pack([120, 1, 3])  # the default: the version-1 bytes
    assert _Grown.decode(pack([120, 1, 3])) == old
    new = _Grown(3, b=4)
    assert new.encode() == pack([120, 2, 3, 4])
    assert _Grown.decode(new.encode()) == new
    with pytest.raises(DecodeError, match="non-canonical"):
        _Grown.decode(pack([120, 2, 3, 0]))  # version 2 for a version-1 value
    with pytest.raises(DecodeError, match="expected 3 elements"):
        _Grown.decode(pack([120, 1, 3, 4]))
    with pytest.raises(DecodeError, match="unsupported encoding version 3"):
        _Grown.decode(pack([120, 3, 3, 4]))


@dataclass(frozen=True)
class _Empty(Wire):
    TAG = 121
    NAME = "Empty"
    MAX_BYTES = 8


def test_a_type_without_fields_round_trips() -> None:
    assert _Empty.decode(_Empty().encode()) == _Empty()
