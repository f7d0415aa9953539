"""Request/response sync over libp2p streams: status, blocks by height, content by hash.

Protocol id `/zkpot/<chain-id-hex>/sync/1`. A stream carries a sequence of
request/response pairs, each one length-prefixed frame (p2p.framing) holding a
canonical msgpack array `[tag, 1, ...]` decoded by `consensus.encoding` rules, so
a decoder raises only `DecodeError`:

- StatusRequest -> Status (genesis hash = chain id, head hash, height, cumulative score);
- BlocksRequest(start, count) -> Blocks: canonical blocks from `start` (height 0 is the
  genesis, raw = its encoding), consecutive,
  each `[height, hash, raw]`; `raw` is empty when the block does not fit the
  response budget: fetch it by content hash;
- ContentRequest(hash, offset, length) -> Chunk(hash, offset, total, data): any blob or
  block by content hash, in chunks, so a download resumes at any offset and is
  hash-checked when complete;
- any request may get Error(code, message) instead.

This module is the wire format and the limits both ends enforce (`SyncLimits`); the
server is p2p.syncserver, the client p2p.syncclient. Limits per request (count, chunk
length, response bytes), per stream (a deadline per request and in total), per peer and
per source address (concurrent streams), with slots kept for useful peers
(p2p.slots), keep a crowd of identities from exhausting the server; every read and
write has a deadline. A peer whose answer contradicts the request or its own hash is
penalised and the call raises `PeerLiedError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.encoding import Bytes, ListOf, Struct, Text, UInt, Wire, peek_tag, wire
from consensus.errors import DecodeError
from consensus.types import Block

MAX_BLOCKS_PER_REQUEST = 64
MAX_CHUNK = 4 * 1024 * 1024
DEFAULT_CHUNK = 1024 * 1024
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # blocks response budget; well under the frame limit
ENTRY_COST = 64  # budget charged per BlockEntry on top of its raw bytes (covers its framing)
MAX_REQUEST_FRAME = 512
MAX_RESPONSE_FRAME = MAX_RESPONSE_BYTES + 64 * 1024
MAX_CONTENT_BYTES = 1 << 30  # neither served nor downloaded if larger
MAX_ERROR_MESSAGE = 200  # characters of printable ASCII, so also bytes

_HASH = Bytes(32, 32)


def sync_protocol(chain_id: bytes) -> str:
    return f"/zkpot/{chain_id.hex()}/sync/1"


# ---------------------------------------------------------------------- messages


@dataclass(frozen=True)
class StatusRequest(Wire):
    TAG = 30
    NAME = "StatusRequest"
    MAX_BYTES = 16


@dataclass(frozen=True)
class BlocksRequest(Wire):
    TAG = 31
    NAME = "BlocksRequest"
    MAX_BYTES = 64

    start: int = wire(UInt(0, 2**62))
    count: int = wire(UInt(1, MAX_BLOCKS_PER_REQUEST))


@dataclass(frozen=True)
class ContentRequest(Wire):
    TAG = 32
    NAME = "ContentRequest"
    MAX_BYTES = 128

    content_hash: bytes = wire(_HASH)
    offset: int = wire(UInt(0, MAX_CONTENT_BYTES))
    length: int = wire(UInt(1, MAX_CHUNK))


@dataclass(frozen=True)
class Status(Wire):
    TAG = 40
    NAME = "Status"
    MAX_BYTES = 128

    genesis_hash: bytes = wire(_HASH)
    head: bytes = wire(_HASH)
    height: int = wire(UInt(0, 2**62))  # a head's height, as Block.height and BlockEntry
    score: int = wire(UInt(0, 2**64 - 1))


@dataclass(frozen=True)
class BlockEntry(Wire):
    TAG = 42
    NAME = "BlockEntry"
    MAX_BYTES = Block.MAX_BYTES + 64

    height: int = wire(UInt(0, 2**62))
    block_hash: bytes = wire(_HASH)
    raw: bytes = wire(Bytes(0, Block.MAX_BYTES))  # empty: too large, fetch by content hash


@dataclass(frozen=True)
class Blocks(Wire):
    TAG = 41
    NAME = "Blocks"
    MAX_BYTES = MAX_RESPONSE_FRAME

    blocks: tuple[BlockEntry, ...] = wire(ListOf(Struct(BlockEntry), MAX_BLOCKS_PER_REQUEST))


@dataclass(frozen=True)
class Chunk(Wire):
    TAG = 43
    NAME = "Chunk"
    MAX_BYTES = MAX_CHUNK + 128

    content_hash: bytes = wire(_HASH)
    offset: int = wire(UInt(0, MAX_CONTENT_BYTES))
    total: int = wire(UInt(0, MAX_CONTENT_BYTES))
    data: bytes = wire(Bytes(0, MAX_CHUNK))


@dataclass(frozen=True)
class Error(Wire):
    TAG = 44
    NAME = "Error"
    MAX_BYTES = 512

    code: int = wire(UInt(0, 255))
    message: str = wire(Text(1, MAX_ERROR_MESSAGE))

    def __post_init__(self) -> None:
        """Any text becomes a valid message: non-printable-ASCII characters turn into
        "?", the text is cut to MAX_ERROR_MESSAGE characters, and empty text is "error",
        so an Error we send always decodes (a valid message is left unchanged)."""
        text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(self.message))
        object.__setattr__(self, "message", text[:MAX_ERROR_MESSAGE] or "error")


ERR_BAD_REQUEST = 1
ERR_NOT_FOUND = 2
ERR_BUSY = 3
ERR_INTERNAL = 4

REQUESTS: dict[int, type[Wire]] = {c.TAG: c for c in (StatusRequest, BlocksRequest, ContentRequest)}
RESPONSES: dict[int, type[Wire]] = {c.TAG: c for c in (Status, Blocks, Chunk, Error)}


def _decode(data: bytes, types: dict[int, type[Wire]], what: str) -> Wire:
    tag = peek_tag(data)
    cls = types.get(tag) if tag is not None else None
    if cls is None:
        raise DecodeError(f"sync {what}: unknown message tag {tag!r}")
    return cls.decode(data)


def decode_request(data: bytes) -> Wire:
    """A sync request; raises only `DecodeError`."""
    return _decode(data, REQUESTS, "request")


def decode_response(data: bytes) -> Wire:
    """A sync response; raises only `DecodeError`."""
    return _decode(data, RESPONSES, "response")


# ---------------------------------------------------------------------- limits


@dataclass(frozen=True)
class SyncLimits:
    """Every number the sync server and client enforce; tests make them small.

    Server, per stream: the next request must arrive within `request_timeout_s` of the
    previous answer (per frame), the waits for requests together may not exceed
    `stream_idle_s`, and the stream ends after `stream_lifetime_s` or
    `max_requests_per_stream` requests, whichever comes first: a stream that trickles
    requests is closed however it spaces them. An answer the peer does not read within
    `write_timeout_s` ends the stream too.

    Server, slots (p2p.slots): `max_streams` in all, `max_streams_per_peer` per identity,
    `max_streams_per_addr` per source address (every identity from one IPv4 address or
    IPv6 /64 shares it). The last `reserved_streams` slots go only to useful peers (they
    served us verified blocks or content lately, or we are fetching from them), and a
    useful peer that still finds no room evicts the oldest idle stream of a peer that
    only asks.

    Client: `open_timeout_s` to open a stream; an answer must start, and keep coming,
    with no gap over `response_stall_s` (so a silent peer costs seconds, while a slow
    but working link is not cut) and be whole within `response_timeout_s`;
    `content_from_any` asks `race_width` peers at once.
    """

    request_timeout_s: float = 10.0
    stream_idle_s: float = 30.0
    stream_lifetime_s: float = 300.0
    max_requests_per_stream: int = 1024  # 1 GiB in 1 MiB chunks; a longer download resumes
    write_timeout_s: float = 60.0
    max_streams: int = 64
    max_streams_per_peer: int = 4
    max_streams_per_addr: int = 16
    reserved_streams: int = 16
    content_cache_items: int = 4
    open_timeout_s: float = 5.0
    response_stall_s: float = 5.0
    response_timeout_s: float = 60.0
    race_width: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.reserved_streams < self.max_streams:
            raise ValueError("reserved_streams must leave room for peers that only ask")
        if min(self.max_streams_per_peer, self.max_streams_per_addr, self.race_width) < 1:
            raise ValueError("per-peer, per-address and race limits must be at least 1")
