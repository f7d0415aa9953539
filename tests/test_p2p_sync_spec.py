"""docs/protocol.md §9 byte for byte: what the sync server answers at the edges, the
ranges the decoders enforce, who gets an Error frame, and the gossip message id.

No network: the server and the client run on in-memory streams and a stand-in host.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from consensus.encoding import pack
from consensus.errors import DecodeError
from consensus.types import Block, Genesis
from p2p import PeerLiedError, SyncClient, SyncServer, penalties
from p2p import syncserver as syncserver_mod
from p2p.framing import FrameError, FrameReader, encode_frame, encode_varint
from p2p.gossip import GOSSIPSUB_PROTOCOLS, message_id
from p2p.slots import PeerMerit, Slot
from p2p.sync import (
    MAX_RESPONSE_FRAME,
    BlockEntry,
    Blocks,
    BlocksRequest,
    Chunk,
    ContentRequest,
    Error,
    Status,
    StatusRequest,
    decode_response,
)
from p2p.syncclient import SyncSession
from support.chainfactory import make_chain
from support.p2p_util import build_store

CHAIN = make_chain()
PEER = ID(b"\x00\x24" + bytes(36))
BLOB = bytes(range(10))
BLOB_HASH = hashlib.sha256(BLOB).digest()


class Host:
    """What SyncServer and SyncClient use of a P2PHost."""

    chain_id = CHAIN.chain_id

    def __init__(self) -> None:
        self.merit = PeerMerit()
        self.penalties: list[float] = []

    def set_stream_handler(self, protocol: str, handler: Any) -> None:
        pass

    def is_banned(self, peer: ID) -> bool:
        return False

    def penalise(self, peer: ID, points: float, why: str) -> None:
        self.penalties.append(points)


class Pipe:
    """A stream that yields `incoming` then EOF, and keeps what is written (or fails)."""

    def __init__(self, incoming: bytes, *, writes_fail: bool = False) -> None:
        self.incoming, self.out, self.writes_fail = incoming, bytearray(), writes_fail

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        n = n or len(self.incoming)
        data, self.incoming = self.incoming[:n], self.incoming[n:]
        return data

    async def write(self, data: bytes) -> None:
        if self.writes_fail:
            raise ConnectionResetError
        self.out += data


class Source:
    """A chain source: blocks of the given sizes at heights 0, 1, ... and one blob."""

    def __init__(self, sizes: tuple[int, ...] = ()) -> None:
        self.blocks = [bytes([i]) * n for i, n in enumerate(sizes)]

    def canonical_hash(self, height: int) -> bytes | None:
        return bytes([height]) * 32 if height < len(self.blocks) else None

    def get_block(self, block_hash: bytes) -> bytes | None:
        return self.blocks[block_hash[0]] if block_hash[0] < len(self.blocks) else None

    def get_blob(self, blob_hash: bytes) -> bytes | None:
        return BLOB if blob_hash == BLOB_HASH else None


def server(source: Any) -> SyncServer:
    return SyncServer(Host(), source)  # type: ignore[arg-type]


async def serve(incoming: bytes, **pipe: bool) -> tuple[list[Any], list[float]]:
    """The frames a server writes for `incoming`, decoded, and the penalties it gave."""
    s, stream = server(Source()), Pipe(incoming, **pipe)
    await s._serve(stream, PEER, Slot(PEER, "a", 0.0, trio.CancelScope()))
    reader, frames = FrameReader(Pipe(bytes(stream.out))), []
    with suppress(FrameError):
        while True:
            frames.append(decode_response(await reader.read_frame(MAX_RESPONSE_FRAME, 1)))
    return frames, s._host.penalties  # type: ignore[attr-defined]


async def test_blocks_from_height_0_start_with_the_genesis_and_block_1_names_the_chain_id(
    tmp_path: Path,
) -> None:
    store, blocks = build_store(tmp_path / "s", CHAIN, 2)
    try:
        answer = await server(store)._answer(BlocksRequest(0, 64))
    finally:
        store.close()
    assert isinstance(answer, Blocks)
    assert answer.blocks[0] == BlockEntry(0, CHAIN.chain_id, CHAIN.genesis.encode())
    assert Genesis.decode(answer.blocks[0].raw).hash() == CHAIN.chain_id
    assert [e.height for e in answer.blocks] == [0, 1, 2]  # up to the head, no further
    assert answer.blocks[1].block_hash == blocks[0].hash()
    assert (
        Block.decode(answer.blocks[1].raw).parent == CHAIN.chain_id
    )  # height 1: parent = chain id


def test_a_block_goes_without_raw_when_it_overruns_the_8_mib_budget() -> None:
    fits, over = 8_388_608 - 64, 8_388_608 - 64 + 1
    answer = server(Source((fits, 1)))._blocks(BlocksRequest(0, 64))
    assert isinstance(answer, Blocks)
    assert [len(e.raw) for e in answer.blocks] == [fits, 0]  # the budget is spent
    assert len(answer.encode()) <= MAX_RESPONSE_FRAME
    answer = server(Source((over, 100)))._blocks(BlocksRequest(0, 64))
    assert isinstance(answer, Blocks)
    assert [len(e.raw) for e in answer.blocks] == [0, 100]  # a skipped block costs 64 only


async def test_content_at_the_end_is_an_empty_chunk_and_past_it_error_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = server(Source())
    assert await s._answer(ContentRequest(BLOB_HASH, 4, 100)) == Chunk(BLOB_HASH, 4, 10, BLOB[4:])
    assert await s._answer(ContentRequest(BLOB_HASH, 10, 100)) == Chunk(BLOB_HASH, 10, 10, b"")
    past = await s._answer(ContentRequest(BLOB_HASH, 11, 100))
    assert isinstance(past, Error) and past.code == 1
    unknown = await s._answer(ContentRequest(bytes(32), 0, 1))
    assert isinstance(unknown, Error) and unknown.code == 2
    # content whose size a Chunk cannot state (over 2^30 bytes) is not served
    monkeypatch.setattr(syncserver_mod, "MAX_CONTENT_BYTES", len(BLOB) - 1)
    too_large = await server(Source())._answer(ContentRequest(BLOB_HASH, 0, 1))
    assert isinstance(too_large, Error) and too_large.code == 2


def test_an_error_message_is_made_valid_printable_ascii_of_at_most_200_bytes() -> None:
    for text, expected in [("é" * 300, "?" * 200), ("", "error"), ("busy\n", "busy?")]:
        error = Error(3, text)
        assert error.message == expected
        assert decode_response(error.encode()) == error
    assert Error(1, "x" * 200).encode() == pack([44, 1, 1, "x" * 200])
    with pytest.raises(DecodeError):
        decode_response(pack([44, 1, 1, "x" * 201]))
    with pytest.raises(DecodeError):
        decode_response(pack([44, 1, 1, "é"]))


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ([40, 1, bytes(32), bytes(32), 2**62, 2**64 - 1], True),
        ([40, 1, bytes(32), bytes(32), 2**62 + 1, 0], False),  # height over 2^62
        ([40, 1, bytes(32), bytes(32), -1, 0], False),
        ([42, 1, 2**62, bytes(32), b""], True),
        ([42, 1, 2**62 + 1, bytes(32), b""], False),
        ([43, 1, bytes(32), 2**30, 2**30, b""], True),
        ([43, 1, bytes(32), 2**30 + 1, 2**30, b""], False),
        ([43, 1, bytes(32), 0, 2**30 + 1, b""], False),
        ([44, 1, 255, "x"], True),
        ([44, 1, 256, "x"], False),
    ],
)
def test_response_integers_outside_their_range_do_not_decode(fields: list[Any], ok: bool) -> None:
    data = pack(fields) if fields[0] != 42 else pack([41, 1, [fields]])
    if ok:
        assert isinstance(decode_response(data), Status | Blocks | Chunk | Error)
    else:
        with pytest.raises(DecodeError):
            decode_response(data)


@pytest.mark.parametrize(
    "incoming",
    [
        encode_varint(513) + bytes(513),  # over the 512-byte request limit
        b"\x80\x00",  # non-minimal length
        b"\xff\xff\xff\xff\xff\x01",  # longer than 5 bytes
        encode_frame(pack([31, 1, 0, 65])),  # decodes as msgpack, count out of range
        encode_frame(b"\xc1"),  # not msgpack
    ],
)
async def test_a_framing_or_decode_error_gets_error_1_a_penalty_and_the_end(
    incoming: bytes,
) -> None:
    frames, points = await serve(incoming + encode_frame(StatusRequest().encode()))
    assert len(frames) == 1 and isinstance(frames[0], Error) and frames[0].code == 1
    assert points == [penalties.MALFORMED]


@pytest.mark.parametrize("incoming", [b"", b"\x85", encode_frame(bytes(100))[:50]])
async def test_a_stream_that_ends_gets_no_error_and_no_penalty(incoming: bytes) -> None:
    assert await serve(incoming) == ([], [])


async def test_an_error_frame_that_cannot_be_written_does_not_escape_the_handler() -> None:
    frames, points = await serve(encode_frame(b"\xc1"), writes_fail=True)
    assert frames == [] and points == [penalties.MALFORMED]


@pytest.mark.parametrize("answer", [encode_varint(MAX_RESPONSE_FRAME + 1), b"\x80\x00"])
async def test_a_malformed_response_frame_is_a_lie(answer: bytes) -> None:
    host = Host()
    session = SyncSession(SyncClient(host), PEER, Pipe(answer))  # type: ignore[arg-type]
    with pytest.raises(PeerLiedError, match="malformed frame"):
        await session.request(StatusRequest())
    assert host.penalties == [penalties.LIE]


def test_gossip_message_id_is_sha256_of_the_data_and_gossipsub_is_v1_1() -> None:
    msg = rpc_pb2.Message(data=b"payload", topicIDs=["t"], from_id=b"a", seqno=b"\x00" * 8)
    assert message_id(msg) == hashlib.sha256(b"payload").digest()
    assert GOSSIPSUB_PROTOCOLS == ["/meshsub/1.1.0", "/meshsub/1.0.0"]
