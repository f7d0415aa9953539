"""The sync server: answers status, block and content requests from one chain's store.

Admission is p2p.slots (per peer, per source address, slots kept for useful peers);
each admitted stream runs under its own cancel scope, which the slot table cancels on
eviction and whose deadline is the stream's lifetime. Reads from the store run in a
thread, never on the event loop.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import trio
from libp2p.peer.id import ID

from consensus.encoding import Wire
from consensus.errors import DecodeError
from p2p import penalties
from p2p.addrs import addr_key, remote_ip
from p2p.framing import FrameError, FrameReader, FrameViolation, write_frame
from p2p.slots import Slot, SlotTable
from p2p.sync import (
    ENTRY_COST,
    ERR_BAD_REQUEST,
    ERR_BUSY,
    ERR_INTERNAL,
    ERR_NOT_FOUND,
    MAX_CONTENT_BYTES,
    MAX_REQUEST_FRAME,
    MAX_RESPONSE_BYTES,
    BlockEntry,
    Blocks,
    BlocksRequest,
    Chunk,
    ContentRequest,
    Error,
    Status,
    StatusRequest,
    SyncLimits,
    decode_request,
    sync_protocol,
)

if TYPE_CHECKING:
    from p2p.host import P2PHost

log = logging.getLogger(__name__)


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


class SyncServer:
    """Serves one chain's store to peers; registered on the host as a stream handler."""

    def __init__(
        self, host: P2PHost, source: ChainSource, limits: SyncLimits | None = None
    ) -> None:
        self._host = host
        self._source = source
        self.limits = limits or SyncLimits()
        self.slots = SlotTable(self.limits, host.merit.is_useful)
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        host.set_stream_handler(sync_protocol(host.chain_id), self.handle)

    async def handle(self, stream: Any) -> None:
        peer: ID = stream.muxed_conn.peer_id
        if self._host.is_banned(peer):
            await self._refuse(stream, "banned")
            return
        admitted = self.slots.admit(peer, addr_key(remote_ip(stream)))
        if isinstance(admitted, str):
            log.debug("sync stream from %s refused: %s", peer, admitted)
            await self._refuse(stream, admitted)
            return
        try:
            with admitted.scope:  # cancelled on eviction; its deadline is the stream's lifetime
                await self._serve(stream, peer, admitted)
        finally:
            self.slots.release(admitted)
            with trio.move_on_after(2) as scope:
                scope.shield = True
                with suppress(Exception):
                    await (stream.reset() if admitted.evicted else stream.close())

    async def _refuse(self, stream: Any, why: str) -> None:
        with trio.move_on_after(5):
            try:
                await write_frame(stream, Error(ERR_BUSY, why).encode(), 5)
                await stream.close()
            except Exception:  # a refusal is best effort
                pass

    async def _serve(self, stream: Any, peer: ID, slot: Slot) -> None:
        reader = FrameReader(stream)
        limits = self.limits
        idle_left = limits.stream_idle_s
        for _ in range(limits.max_requests_per_stream):
            wait = min(limits.request_timeout_s, idle_left)
            if wait <= 0:
                return  # the stream has waited for requests long enough in total
            slot.busy = False
            started = trio.current_time()
            try:
                frame = await reader.read_frame(MAX_REQUEST_FRAME, wait)
                request = decode_request(frame)
            except (FrameViolation, DecodeError) as exc:  # the peer broke the protocol
                await self._malformed(stream, peer, str(exc))
                return
            except FrameError:
                return  # EOF, reset or idle: nobody to answer, the stream is done
            idle_left -= trio.current_time() - started
            slot.busy = True
            response = await self._answer(request)
            try:
                await write_frame(stream, response.encode(), limits.write_timeout_s)
            except FrameError:
                return

    async def _malformed(self, stream: Any, peer: ID, why: str) -> None:
        """A bad frame or an undecodable request: penalty, Error 1, end of the stream."""
        self._host.penalise(peer, penalties.MALFORMED, f"bad sync request: {why}")
        with suppress(FrameError):
            await write_frame(stream, Error(ERR_BAD_REQUEST, "malformed request").encode(), 5)

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
            if len(raw) + ENTRY_COST > budget:
                raw = b""  # the client fetches it by content hash
            budget -= len(raw) + ENTRY_COST
            entries.append(BlockEntry(height, block_hash, raw))
        return Blocks(tuple(entries))

    async def _chunk(self, request: ContentRequest) -> Wire:
        content = self._cache.get(request.content_hash)
        if content is None:
            content = await trio.to_thread.run_sync(self._load, request.content_hash)
            if content is None:
                return Error(ERR_NOT_FOUND, "unknown content hash")
            if len(content) > MAX_CONTENT_BYTES:  # Chunk.total could not say its size
                return Error(ERR_NOT_FOUND, "content too large to serve")
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
