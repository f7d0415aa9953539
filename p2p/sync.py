"""Request/response sync over libp2p streams: status, blocks by height, content by hash.

Protocol id `/zkpot/<chain-id-hex>/sync/1`. A stream carries a sequence of
request/response pairs, each one length-prefixed frame (p2p.framing) holding a
canonical msgpack array `[tag, 1, ...]` decoded by `consensus.encoding` rules, so
a decoder raises only `DecodeError`:

- StatusRequest -> Status (genesis hash = chain id, head hash, height, cumulative score);
- BlocksRequest(start, count) -> Blocks: canonical blocks from `start`, consecutive,
  each `[height, hash, raw]`; `raw` is empty when the block does not fit the
  response budget: fetch it by content hash;
- ContentRequest(hash, offset, length) -> Chunk(hash, offset, total, data): any blob or
  block by content hash, in chunks, so a download resumes at any offset and is
  hash-checked when complete;
- any request may get Error(code, message) instead.

Limits per request (count, chunk length, response bytes), per stream (requests, idle
time) and per peer (concurrent streams) keep one peer from exhausting the server;
every read and write has a deadline. A peer whose answer contradicts the request or
its own hash is penalised and the call raises `PeerLiedError`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio
from libp2p.peer.id import ID

from consensus.encoding import Bytes, ListOf, Struct, Text, UInt, Wire, peek_tag, wire
from consensus.errors import DecodeError
from consensus.types import Block
from p2p import penalties
from p2p.framing import FrameError, FrameReader, write_frame

if TYPE_CHECKING:
    from p2p.host import P2PHost

log = logging.getLogger(__name__)

MAX_BLOCKS_PER_REQUEST = 64
MAX_CHUNK = 4 * 1024 * 1024
DEFAULT_CHUNK = 1024 * 1024
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # blocks response budget; well under the frame limit
MAX_REQUEST_FRAME = 512
MAX_RESPONSE_FRAME = MAX_RESPONSE_BYTES + 64 * 1024
MAX_CONTENT_BYTES = 1 << 30  # refuse to download anything larger

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
    height: int = wire(UInt(0, 2**64 - 1))
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
    message: str = wire(Text(1, 200))


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


# ---------------------------------------------------------------------- data source


class MetaLike(Protocol):
    @property
    def height(self) -> int: ...

    @property
    def score(self) -> int: ...


class ChainSource(Protocol):
    """What the server reads; `storage.ChainStore` provides exactly this."""

    def genesis_hash(self) -> bytes | None: ...

    def head(self) -> bytes: ...

    def get_meta(self, block_hash: bytes) -> MetaLike | None: ...

    def canonical_hash(self, height: int) -> bytes | None: ...

    def get_block(self, block_hash: bytes) -> bytes | None: ...

    def get_blob(self, blob_hash: bytes) -> bytes | None: ...


@dataclass(frozen=True)
class SyncLimits:
    request_timeout_s: float = 30.0  # a response (or a request after the previous) must arrive
    write_timeout_s: float = 60.0  # a peer that stops reading is dropped after this
    max_requests_per_stream: int = 4096
    max_streams_per_peer: int = 4
    max_streams: int = 64
    content_cache_items: int = 4


# ---------------------------------------------------------------------- server


class SyncServer:
    """Serves one chain's store to peers; registered on the host as a stream handler."""

    def __init__(
        self, host: P2PHost, source: ChainSource, limits: SyncLimits | None = None
    ) -> None:
        self._host = host
        self._source = source
        self.limits = limits or SyncLimits()
        self._per_peer: dict[ID, int] = {}
        self._streams = trio.Semaphore(self.limits.max_streams)
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        host.set_stream_handler(sync_protocol(host.chain_id), self.handle)

    async def handle(self, stream: Any) -> None:
        peer: ID = stream.muxed_conn.peer_id
        if self._per_peer.get(peer, 0) >= self.limits.max_streams_per_peer:
            await self._refuse(stream, "too many concurrent sync streams")
            return
        try:
            self._streams.acquire_nowait()
        except trio.WouldBlock:
            await self._refuse(stream, "server busy")
            return
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        try:
            await self._serve(stream, peer)
        finally:
            self._streams.release()
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]
            with trio.move_on_after(2):
                with suppress(Exception):
                    await stream.close()

    async def _refuse(self, stream: Any, why: str) -> None:
        try:
            await write_frame(stream, Error(ERR_BUSY, why).encode(), 5)
            await stream.close()
        except Exception:  # a refusal is best effort
            pass

    async def _serve(self, stream: Any, peer: ID) -> None:
        reader = FrameReader(stream)
        limits = self.limits
        for _ in range(limits.max_requests_per_stream):
            try:
                frame = await reader.read_frame(MAX_REQUEST_FRAME, limits.request_timeout_s)
            except FrameError:
                return  # EOF, idle or garbage framing: the stream is done
            try:
                request = decode_request(frame)
            except DecodeError as exc:
                self._host.penalise(peer, penalties.MALFORMED, f"bad sync request: {exc}")
                await write_frame(stream, Error(ERR_BAD_REQUEST, "undecodable request").encode(), 5)
                return
            response = await self._answer(request)
            try:
                await write_frame(stream, response.encode(), limits.write_timeout_s)
            except FrameError:
                return

    async def _answer(self, request: Wire) -> Wire:
        try:
            if isinstance(request, StatusRequest):
                return await trio.to_thread.run_sync(self._status)
            if isinstance(request, BlocksRequest):
                return await trio.to_thread.run_sync(self._blocks, request)
            if isinstance(request, ContentRequest):
                return await self._chunk(request)
        except Exception as exc:  # store errors: tell the peer, keep serving others
            log.warning("sync request %s failed: %s: %s", request.NAME, type(exc).__name__, exc)
            return Error(ERR_INTERNAL, "internal error")
        return Error(ERR_BAD_REQUEST, "unsupported request")

    def _status(self) -> Wire:
        genesis = self._source.genesis_hash()
        if genesis is None:
            return Error(ERR_NOT_FOUND, "no genesis")
        head = self._source.head()
        meta = self._source.get_meta(head)
        if meta is None:
            return Error(ERR_INTERNAL, "head has no meta")
        return Status(genesis, head, meta.height, meta.score)

    def _blocks(self, request: BlocksRequest) -> Wire:
        entries: list[BlockEntry] = []
        budget = MAX_RESPONSE_BYTES
        for height in range(request.start, request.start + request.count):
            block_hash = self._source.canonical_hash(height)
            if block_hash is None:
                break
            raw = self._source.get_block(block_hash)
            if raw is None:
                break
            if len(raw) + 64 > budget:
                raw = b""  # the client fetches it by content hash
            budget -= len(raw) + 64
            entries.append(BlockEntry(height, block_hash, raw))
        return Blocks(tuple(entries))

    async def _chunk(self, request: ContentRequest) -> Wire:
        content = self._cache.get(request.content_hash)
        if content is None:
            content = await trio.to_thread.run_sync(self._load, request.content_hash)
            if content is None:
                return Error(ERR_NOT_FOUND, "unknown content hash")
            self._cache[request.content_hash] = content
            while len(self._cache) > self.limits.content_cache_items:
                self._cache.popitem(last=False)
        self._cache.move_to_end(request.content_hash)
        if request.offset > len(content):
            return Error(ERR_BAD_REQUEST, "offset beyond the end")
        data = content[request.offset : request.offset + request.length]
        return Chunk(request.content_hash, request.offset, len(content), data)

    def _load(self, content_hash: bytes) -> bytes | None:
        blob = self._source.get_blob(content_hash)
        if blob is None:
            blob = self._source.get_block(content_hash)
        return blob


# ---------------------------------------------------------------------- client


class SyncError(Exception):
    """A sync call failed; `partial` holds content bytes received so far (to resume)."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class PeerLiedError(SyncError):
    """The peer answered with data that contradicts the request or its hash."""


class WrongChainError(PeerLiedError):
    """The peer follows another genesis."""


class SyncSession:
    """One stream to one peer; requests go one after another."""

    def __init__(self, client: SyncClient, peer: ID, stream: Any) -> None:
        self._client = client
        self.peer = peer
        self._stream = stream
        self._reader = FrameReader(stream)

    async def request(self, message: Wire) -> Wire:
        limits = self._client.limits
        try:
            await write_frame(self._stream, message.encode(), limits.write_timeout_s)
            frame = await self._reader.read_frame(MAX_RESPONSE_FRAME, limits.request_timeout_s)
        except FrameError as exc:
            raise SyncError(f"{message.NAME} to {self.peer}: {exc}") from None
        try:
            response = decode_response(frame)
        except DecodeError as exc:
            raise self._lied(f"undecodable response: {exc}") from None
        if isinstance(response, Error):
            raise SyncError(f"{message.NAME} refused by {self.peer}: {response.message}")
        return response

    def _lied(self, why: str, partial: bytes = b"") -> PeerLiedError:
        self._client.host.penalise(self.peer, penalties.LIE, f"sync: {why}")
        return PeerLiedError(f"peer {self.peer}: {why}", partial)

    async def status(self) -> Status:
        response = await self.request(StatusRequest())
        if not isinstance(response, Status):
            raise self._lied(f"answered status with {response.NAME}")
        if response.genesis_hash != self._client.host.chain_id:
            exc = self._lied(f"follows another chain ({response.genesis_hash.hex()[:16]})")
            raise WrongChainError(str(exc))
        return response

    async def blocks(self, start: int, count: int) -> list[BlockEntry]:
        """Canonical blocks from `start` (fewer if the peer has fewer); hashes are checked."""
        count = max(1, min(count, MAX_BLOCKS_PER_REQUEST))
        response = await self.request(BlocksRequest(start, count))
        if not isinstance(response, Blocks):
            raise self._lied(f"answered blocks with {response.NAME}")
        for i, entry in enumerate(response.blocks):
            if entry.height != start + i:
                raise self._lied(f"block at position {i} has height {entry.height}")
            if entry.raw and hashlib.sha256(entry.raw).digest() != entry.block_hash:
                raise self._lied(f"block at height {entry.height} does not match its hash")
        return list(response.blocks)

    async def content(
        self, content_hash: bytes, *, have: bytes = b"", chunk: int = DEFAULT_CHUNK
    ) -> bytes:
        """Download content by hash, resuming after `have`; verified against the hash."""
        chunk = max(1, min(chunk, MAX_CHUNK))
        buf = bytearray(have)
        total: int | None = None
        while total is None or len(buf) < total:
            try:
                response = await self.request(ContentRequest(content_hash, len(buf), chunk))
            except PeerLiedError:
                raise
            except SyncError as exc:
                raise SyncError(str(exc), bytes(buf)) from None
            if not isinstance(response, Chunk):
                raise self._lied(f"answered content with {response.NAME}")
            if response.content_hash != content_hash or response.offset != len(buf):
                raise self._lied("chunk for another hash or offset")
            if total is not None and response.total != total:
                raise self._lied("content size changed between chunks")
            total = response.total
            if total > MAX_CONTENT_BYTES:
                raise SyncError(f"content of {total} bytes is over the limit")
            expected = min(chunk, total - len(buf))
            if len(response.data) != expected:
                raise self._lied(f"chunk of {len(response.data)} bytes, expected {expected}")
            buf += response.data
        data = bytes(buf)
        if hashlib.sha256(data).digest() != content_hash:
            raise self._lied("content does not match its hash")
        return data


class SyncClient:
    """Opens sync sessions to peers of our chain."""

    def __init__(self, host: P2PHost, limits: SyncLimits | None = None) -> None:
        self.host = host
        self.limits = limits or SyncLimits()

    @asynccontextmanager
    async def session(self, peer: ID) -> AsyncIterator[SyncSession]:
        try:
            stream = await self.host.new_stream(peer, sync_protocol(self.host.chain_id))
        except ConnectionError as exc:
            raise SyncError(str(exc)) from None
        try:
            yield SyncSession(self, peer, stream)
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                with suppress(Exception):
                    await stream.close()

    async def status(self, peer: ID) -> Status:
        async with self.session(peer) as s:
            return await s.status()

    async def blocks(self, peer: ID, start: int, count: int) -> list[BlockEntry]:
        async with self.session(peer) as s:
            return await s.blocks(start, count)

    async def content(self, peer: ID, content_hash: bytes, *, have: bytes = b"") -> bytes:
        async with self.session(peer) as s:
            return await s.content(content_hash, have=have)

    async def content_from_any(self, peers: list[ID], content_hash: bytes) -> bytes:
        """Try peers in turn, resuming each download where the previous one broke off."""
        have = b""
        errors: list[str] = []
        for peer in peers:
            try:
                return await self.content(peer, content_hash, have=have)
            except PeerLiedError as exc:
                errors.append(str(exc))
                have = b""  # cannot tell which bytes were wrong
            except SyncError as exc:
                errors.append(str(exc))
                have = exc.partial
        raise SyncError(f"no peer served {content_hash.hex()}: {'; '.join(errors)}", have)
