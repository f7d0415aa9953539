"""The sync client: status, blocks and content from peers, each call on a short leash.

Every call opens its own stream within `open_timeout_s`; an answer that stalls for
`response_stall_s` or is not whole within `response_timeout_s` fails the call, so a
silent peer costs seconds. Content is raced (`content_from_any`): a few peers at once,
the first verified copy wins. A peer that serves verified blocks or content earns merit
(p2p.slots.PeerMerit), which the server side repays with slot priority.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from consensus.crypto import short
from consensus.encoding import Wire
from consensus.errors import DecodeError
from p2p import penalties
from p2p.framing import FrameError, FrameReader, FrameViolation, write_frame
from p2p.sync import (
    DEFAULT_CHUNK,
    MAX_BLOCKS_PER_REQUEST,
    MAX_CHUNK,
    MAX_CONTENT_BYTES,
    MAX_RESPONSE_FRAME,
    BlockEntry,
    Blocks,
    BlocksRequest,
    Chunk,
    ContentRequest,
    Error,
    Status,
    StatusRequest,
    SyncLimits,
    decode_response,
    sync_protocol,
)

if TYPE_CHECKING:
    from p2p.host import P2PHost


class SyncError(Exception):
    """A sync call failed; `partial` holds content bytes received so far (to resume)."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class PeerLiedError(SyncError):
    """The peer answered with data that contradicts the request or its hash."""


class WrongChainError(PeerLiedError):
    """The peer follows another genesis."""


class _Progress:
    """A stream whose reads push a stall deadline on: bytes arriving keep an answer alive."""

    def __init__(self, stream: Any, stall_s: float) -> None:
        self._stream = stream
        self._stall_s = stall_s
        self.scope: trio.CancelScope | None = None

    async def read(self, n: int | None = None) -> bytes:
        data: bytes = await self._stream.read(n)
        if data and self.scope is not None:
            self.scope.deadline = trio.current_time() + self._stall_s
        return data

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)


class SyncSession:
    """One stream to one peer; requests go one after another."""

    def __init__(self, client: SyncClient, peer: ID, stream: Any) -> None:
        self._client = client
        self.peer = peer
        self._stream = _Progress(stream, client.limits.response_stall_s)
        self._reader = FrameReader(self._stream)

    async def request(self, message: Wire) -> Wire:
        limits = self._client.limits
        frame = b""
        with trio.move_on_after(limits.response_stall_s) as stall:
            self._stream.scope = stall
            try:
                await write_frame(self._stream, message.encode(), limits.response_stall_s)
                frame = await self._reader.read_frame(MAX_RESPONSE_FRAME, limits.response_timeout_s)
            except FrameViolation as exc:  # as an undecodable response: the peer broke the protocol
                raise self._lied(f"malformed frame: {exc}") from None
            except FrameError as exc:
                raise SyncError(f"{message.NAME} to {self.peer}: {exc}") from None
            finally:
                self._stream.scope = None
        if stall.cancelled_caught:
            raise SyncError(
                f"{message.NAME} to {self.peer}: answer stalled for {limits.response_stall_s} s"
            )
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
            exc = self._lied(f"follows another chain ({short(response.genesis_hash, 16)})")
            raise WrongChainError(str(exc))
        return response

    async def blocks(self, start: int, count: int) -> list[BlockEntry]:
        """Canonical blocks from `start` (fewer if the peer has fewer); hashes are checked."""
        count = max(1, min(count, MAX_BLOCKS_PER_REQUEST))
        with self._client.host.merit.fetching(self.peer):
            response = await self.request(BlocksRequest(start, count))
        if not isinstance(response, Blocks):
            raise self._lied(f"answered blocks with {response.NAME}")
        for i, entry in enumerate(response.blocks):
            if entry.height != start + i:
                raise self._lied(f"block at position {i} has height {entry.height}")
            if entry.raw and hashlib.sha256(entry.raw).digest() != entry.block_hash:
                raise self._lied(f"block at height {entry.height} does not match its hash")
        if response.blocks:
            self._client.host.merit.served(self.peer)
        return list(response.blocks)

    async def content(
        self, content_hash: bytes, *, have: bytes = b"", chunk: int = DEFAULT_CHUNK
    ) -> bytes:
        """Download content by hash, resuming after `have`; verified against the hash."""
        with self._client.host.merit.fetching(self.peer):
            data = await self._resume(content_hash, have, chunk) if have else None
            if data is None:
                data = await self._download(content_hash, bytearray(), chunk)
        if hashlib.sha256(data).digest() != content_hash:
            raise self._lied("content does not match its hash")
        self._client.host.merit.served(self.peer)
        return data

    async def _resume(self, content_hash: bytes, have: bytes, chunk: int) -> bytes | None:
        """The content continued after `have`, or None to start over: `have` may come from
        another peer and cannot be checked until the end, so this peer is not blamed for it."""
        try:
            data = await self._download(content_hash, bytearray(have), chunk)
        except PeerLiedError:
            raise
        except SyncError as exc:
            if len(exc.partial) > len(have):
                raise  # progress: the caller resumes from the longer partial
            return None
        return data if hashlib.sha256(data).digest() == content_hash else None

    async def _download(self, content_hash: bytes, buf: bytearray, chunk: int) -> bytes:
        chunk = max(1, min(chunk, MAX_CHUNK))
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
        return bytes(buf)


class SyncClient:
    """Opens sync sessions to peers of our chain."""

    def __init__(self, host: P2PHost, limits: SyncLimits | None = None) -> None:
        self.host = host
        self.limits = limits or SyncLimits()

    @asynccontextmanager
    async def session(self, peer: ID) -> AsyncIterator[SyncSession]:
        protocol = sync_protocol(self.host.chain_id)
        try:
            stream = await self.host.new_stream(peer, protocol, self.limits.open_timeout_s)
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
        """The first verified copy from any of `peers`, asking `race_width` of them at once.

        Peers are tried in the order given, a new one as soon as one fails; the first
        to deliver content matching the hash wins and the others are cancelled, so a
        silent or slow peer costs a place in the race, not a turn. A download that
        breaks off hands its bytes on: later downloads resume from the longest partial,
        and a peer that made progress goes back in the queue (servers end long streams;
        each return needs new bytes, so this ends). Raises `SyncError` (with that
        partial) when no peer delivers.
        """
        queue = deque(p for p in dict.fromkeys(peers) if p != self.host.peer_id)
        partial = b""
        errors: list[str] = []
        send, receive = trio.open_memory_channel[tuple[ID, int, bytes | SyncError]](math.inf)
        async with trio.open_nursery() as nursery:
            running = 0
            while True:
                while queue and running < self.limits.race_width:
                    nursery.start_soon(self._race, queue.popleft(), content_hash, partial, send)
                    running += 1
                if not running:
                    break
                peer, started_at, outcome = await receive.receive()
                running -= 1
                if isinstance(outcome, bytes):
                    nursery.cancel_scope.cancel()
                    return outcome
                errors.append(str(outcome))
                if isinstance(outcome, PeerLiedError):
                    continue  # its bytes are worthless
                if len(outcome.partial) > started_at:
                    queue.append(peer)
                if len(outcome.partial) > len(partial):
                    partial = outcome.partial
        raise SyncError(f"no peer served {content_hash.hex()}: {'; '.join(errors[-8:])}", partial)

    async def _race(
        self,
        peer: ID,
        content_hash: bytes,
        have: bytes,
        send: trio.MemorySendChannel[tuple[ID, int, bytes | SyncError]],
    ) -> None:
        try:
            outcome: bytes | SyncError = await self.content(peer, content_hash, have=have)
        except SyncError as exc:
            outcome = exc
        send.send_nowait((peer, len(have), outcome))
