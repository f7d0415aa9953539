"""Catching up: pull the blocks of a heavier chain from peers and import them.

Woken by the importer (a block whose parent we lack) or every few seconds; asks
every peer's status at once with a short deadline (silent peers cannot slow
convergence), then pulls from the heaviest peers first, through the one block
importer, so a synced block is validated exactly like a gossiped one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID

from consensus.crypto import sha256
from consensus.errors import ConsensusError, InvalidError
from consensus.types import Block
from node.chain import Chain
from node.importer import BlockImporter
from node.interfaces import Net, Sync
from p2p import SyncError, penalties
from p2p.sync import Status
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")

POLL_S = 3
STATUS_TIMEOUT_S = 3  # peers are asked at once: a silent one costs this, not a turn each
PEER_BUDGET_S = 300  # one slow peer must not stall catching up forever
BATCH = 64


class Wakeup:
    """A resettable event: `set` from anywhere, `wait` returns once per burst of sets."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self._event.wait()
        self._event = trio.Event()


@dataclass
class Progress:
    """How far catching up has come, for `zkpot status`: the best height a peer
    reported, and the import rate (an average over the recent imports by sync)."""

    peer_height: int = 0
    blocks_per_s: float = 0.0
    _mark: tuple[float, int] | None = (
        None  # (monotonic seconds, blocks imported) at the last sample
    )

    def imported(self, count: int, now: float) -> None:
        if self._mark is None:
            self._mark = (now, 0)
        at, total = self._mark
        total += count
        if now - at >= 1.0:  # one sample per second at most: a smooth rate
            rate = total / (now - at)
            self.blocks_per_s = (
                rate if not self.blocks_per_s else 0.7 * self.blocks_per_s + 0.3 * rate
            )
            self._mark = (now, 0)
        else:
            self._mark = (at, total)

    def report(self, height: int) -> dict[str, object]:
        behind = max(0, self.peer_height - height)
        eta = round(behind / self.blocks_per_s, 1) if behind and self.blocks_per_s else None
        return {
            "height": height,
            "peer_height": max(self.peer_height, height),
            "catching_up": behind > 1,
            "blocks_per_s": round(self.blocks_per_s, 2),
            "eta_s": eta,
        }


class Syncer:
    def __init__(
        self, chain: Chain, importer: BlockImporter, net: Net, sync: Sync, wakeup: Wakeup
    ) -> None:
        self.chain = chain
        self.importer = importer
        self.net = net
        self.sync = sync
        self.wakeup = wakeup
        self.progress = Progress()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait(POLL_S)
            await self.sync_once()

    async def sync_once(self) -> None:
        """Ask every peer for its status at once (a silent peer costs STATUS_TIMEOUT_S, once),
        then catch up from the heaviest peers first until none is ahead."""
        statuses: dict[ID, Status] = {}

        async def ask(peer: ID) -> None:
            with trio.move_on_after(STATUS_TIMEOUT_S):
                try:
                    statuses[peer] = await self.sync.status(peer)
                except (SyncError, ConsensusError) as exc:
                    log.info("status from %s failed: %s", peer, exc)

        async with trio.open_nursery() as nursery:
            for peer in self.net.connected_peers():
                nursery.start_soon(ask, peer)
        # what peers claim is only shown, never trusted: the height of a heavier chain
        heavier = [st.height for st in statuses.values() if st.score > self._head_score()]
        self.progress.peer_height = max(heavier, default=self.chain.head_height())
        for peer, status in sorted(statuses.items(), key=lambda ps: -ps[1].score):
            if status.score <= self._head_score():
                break
            try:
                with trio.move_on_after(PEER_BUDGET_S):
                    await self.sync_from(peer, status)
            except (SyncError, ConsensusError, WorkerError) as exc:
                log.info("sync from %s failed: %s", peer, exc)
            except Exception:  # a bug here must never end the node
                log.exception("sync from %s failed unexpectedly", peer)

    async def sync_from(self, peer: ID, status: Status) -> None:
        if status.score <= self.chain.node(self.chain.head).score or self.chain.has(status.head):
            return
        start = self.chain.node(self.chain.forks.finalized).height + 1
        while start <= status.height:
            entries = await self.sync.blocks(peer, start, min(BATCH, status.height - start + 1))
            if not entries:
                return
            for e in entries:
                if self.chain.has(e.block_hash):
                    continue
                if e.block_hash in self.importer.refused:
                    return
                raw = e.raw or await self.sync.content(peer, e.block_hash)
                if sha256(raw) != e.block_hash:
                    self.net.penalise(peer, penalties.LIE, "sync block does not match its hash")
                    return
                block = Block.decode(raw)
                if not self.importer.placeable(block, e.block_hash):
                    self.importer.refuse(e.block_hash, "parent unknown or below finality")
                    return
                try:
                    if not await self.importer.import_block(block, raw, [peer]):
                        return
                except InvalidError as exc:
                    self.net.penalise(peer, penalties.LIE, f"served an invalid block: {exc}")
                    return
                self.progress.imported(1, trio.current_time())
            start = entries[-1].height + 1

    def _head_score(self) -> int:
        return self.chain.node(self.chain.head).score
