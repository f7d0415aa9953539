"""Who gets the sync server's stream slots: useful peers before peers that only ask.

A stream slot is cheap to take and costly to lack: block models are fetched over sync,
so a node whose slots are all held cannot accept anyone's block. Identities are free,
so every limit that matters is also counted per source address (`p2p.addrs.addr_key`),
and a peer that has earned it (`PeerMerit`) gets a slot ahead of peers that only ask:
the last `reserved_streams` slots are its alone, and when there is still no room it
evicts the oldest idle stream of a peer that has only asked.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID

if TYPE_CHECKING:
    from p2p.sync import SyncLimits


class PeerMerit:
    """Peers worth a slot: they served us verified blocks or content lately, or we are
    fetching from them right now. Only a peer's own service earns merit, never its asking;
    memory is bounded (`max_peers`) and merit lapses after `ttl_s`."""

    def __init__(self, ttl_s: float = 3600.0, max_peers: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.max_peers = max_peers
        self._served: OrderedDict[ID, float] = OrderedDict()
        self._fetching: dict[ID, int] = {}

    def served(self, peer: ID) -> None:
        """`peer` just gave us something we asked for and verified (a block, content)."""
        self._served[peer] = time.monotonic()
        self._served.move_to_end(peer)
        while len(self._served) > self.max_peers:
            self._served.popitem(last=False)

    @contextmanager
    def fetching(self, peer: ID) -> Iterator[None]:
        """While we download from `peer`, it counts as useful."""
        self._fetching[peer] = self._fetching.get(peer, 0) + 1
        try:
            yield
        finally:
            self._fetching[peer] -= 1
            if not self._fetching[peer]:
                del self._fetching[peer]

    def is_useful(self, peer: ID) -> bool:
        if peer in self._fetching:
            return True
        last = self._served.get(peer)
        return last is not None and time.monotonic() - last < self.ttl_s


@dataclass(eq=False)
class Slot:
    """One admitted sync stream; cancelling `scope` ends it (eviction, lifetime)."""

    peer: ID
    addr: str
    opened: float
    scope: trio.CancelScope
    busy: bool = False  # answering a request; idle while waiting for the next one
    evicted: bool = False


class SlotTable:
    """Admits, evicts and releases the sync server's streams; every decision is synchronous
    (no checkpoint between the count and the take), so concurrent opens cannot overbook."""

    def __init__(self, limits: SyncLimits, is_useful: Callable[[ID], bool]) -> None:
        self.limits = limits
        self._is_useful = is_useful
        self._slots: list[Slot] = []
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._slots)

    def count(self, *, peer: ID | None = None, addr: str | None = None) -> int:
        return sum(
            1
            for s in self._slots
            if (peer is None or s.peer == peer) and (addr is None or s.addr == addr)
        )

    def admit(self, peer: ID, addr: str) -> Slot | str:
        """A slot for a new stream from `peer` at `addr`, or why there is none."""
        limits = self.limits
        if self.count(peer=peer) >= limits.max_streams_per_peer:
            return self._refuse("too many concurrent sync streams")
        useful = self._is_useful(peer)
        cap = limits.max_streams if useful else limits.max_streams - limits.reserved_streams
        while True:
            addr_full = self.count(addr=addr) >= limits.max_streams_per_addr
            full = len(self._slots) >= cap
            if not addr_full and not full:
                break
            why = "too many sync streams from your address" if addr_full else "server busy"
            victim = self._victim(addr if addr_full else None) if useful else None
            if victim is None:
                return self._refuse(why)
            self._evict(victim)
        now = trio.current_time()
        slot = Slot(peer, addr, now, trio.CancelScope(deadline=now + limits.stream_lifetime_s))
        self._slots.append(slot)
        return slot

    def release(self, slot: Slot) -> None:
        if slot in self._slots:
            self._slots.remove(slot)

    def _refuse(self, why: str) -> str:
        self.refused += 1
        return why

    def _victim(self, addr: str | None) -> Slot | None:
        # the oldest idle stream of a peer that only asks; failing that, its oldest busy one
        candidates = [
            s
            for s in self._slots
            if (addr is None or s.addr == addr) and not self._is_useful(s.peer)
        ]
        return min(candidates, key=lambda s: (s.busy, s.opened), default=None)

    def _evict(self, slot: Slot) -> None:
        slot.evicted = True
        slot.scope.cancel()
        self._slots.remove(slot)
        self.evicted += 1
