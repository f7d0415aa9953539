"""Keepalive: ping every connected peer; close a connection that stops answering.

A peer that vanishes without closing (a partition, a frozen process, a dropped NAT
mapping) leaves its connection open until TCP gives up retransmitting: 38 to 56 s
measured here, during which gossip to it is lost, sync requests to it stall and the
reconnect loop, seeing a connection, does not redial. So every `interval_s` each
connected peer gets one libp2p ping (`/ipfs/ping/1.0.0`: 32 random bytes, echoed;
py-libp2p answers it by default, as do go- and js-libp2p) on a fresh stream; no echo
within `timeout_s` is a failure, and after `failures` in a row the connection is
closed: the host's reconnect loop then redials the peer if it is a known one.
A dead connection is thus closed within `failures * (interval_s + timeout_s)` after it
went dead (a new connection is watched within `SCAN_S`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.io.utils import read_exactly
from libp2p.peer.id import ID

log = logging.getLogger(__name__)

PING_PROTOCOL = TProtocol("/ipfs/ping/1.0.0")
PING_BYTES = 32
SCAN_S = 1.0  # how often new connections are looked for


class Keepalive:
    """One watcher task per connected peer, all in the nursery of `run`."""

    def __init__(
        self,
        libp2p: Any,
        connected: Callable[[], list[ID]],
        close: Callable[[ID], Awaitable[None]],
        *,
        interval_s: float,
        timeout_s: float,
        failures: int,
    ) -> None:
        self._libp2p = libp2p
        self._connected = connected
        self._close = close
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures = failures
        self._watched: set[ID] = set()
        self.closed = 0  # connections closed for not answering (tests, metrics)

    @property
    def watching(self) -> int:
        """How many peers have a watcher now."""
        return len(self._watched)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                for peer in self._connected():
                    if peer not in self._watched:
                        self._watched.add(peer)
                        nursery.start_soon(self._watch, peer)
                await trio.sleep(min(SCAN_S, self.interval_s))

    async def _watch(self, peer: ID) -> None:
        """Ping `peer` while it is connected; close the connection after `failures` misses."""
        missed = 0
        try:
            while True:
                await trio.sleep(self.interval_s)
                if peer not in self._connected():
                    return
                if await self.ping(peer):
                    missed = 0
                    continue
                missed += 1
                if missed >= self.failures:
                    log.info("%s missed %d pings in a row: closing the connection", peer, missed)
                    self.closed += 1
                    await self._close(peer)
                    return
        finally:
            self._watched.discard(peer)

    async def ping(self, peer: ID) -> bool:
        """One ping round trip on a fresh stream, within `timeout_s`."""
        stream: Any = None
        ok = False
        with trio.move_on_after(self.timeout_s):
            try:
                stream = await self._libp2p.new_stream(peer, [PING_PROTOCOL])
                payload = secrets.token_bytes(PING_BYTES)
                await stream.write(payload)
                ok = await read_exactly(stream, PING_BYTES) == payload
            except Exception as exc:  # a broken stream or connection is a missed ping
                log.debug("ping %s failed: %s: %s", peer, type(exc).__name__, exc)
        if stream is not None:
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await (stream.close() if ok else stream.reset())
        return ok
