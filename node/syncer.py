"""Catching up: pull the blocks of a better chain from peers and import them.

Woken by the importer (a block whose parent we lack) or every few seconds; asks
every peer's status at once with a short deadline (silent peers cannot slow
convergence), then pulls from the best peers first, through the one block
importer, so a synced block is validated exactly like a gossiped one. "Better" is
fork choice's own order, tie-break included: two sides of a fork with equal scores
(each missed the other's block, e.g. its model could not be fetched in time) must
still converge, so the side whose head loses the tie pulls the other's.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from functools import partial

import trio
from libp2p.peer.id import ID

from consensus import blocks
from consensus.checks import VerifyProof
from consensus.crypto import sha256
from consensus.errors import ConsensusError, InvalidError
from consensus.forkchoice import preference
from consensus.strategy import rule_for
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
AHEAD = 8  # checks run ahead at once: enough to keep a 2-worker pool busy between imports


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
        # what peers claim is only shown, never trusted: the height of a better chain
        better = [st.height for st in statuses.values() if self._better(st)]
        self.progress.peer_height = max(better, default=self.chain.head_height())
        for peer, status in sorted(statuses.items(), key=lambda ps: self._rank(ps[1])):
            if not self._better(status):
                break
            try:
                with trio.move_on_after(PEER_BUDGET_S):
                    await self.sync_from(peer, status)
            except (SyncError, ConsensusError, WorkerError) as exc:
                log.info("sync from %s failed: %s", peer, exc)
            except Exception:  # a bug here must never end the node
                log.exception("sync from %s failed unexpectedly", peer)

    async def sync_from(self, peer: ID, status: Status) -> None:
        if not self._better(status) or self.chain.has(status.head):
            return
        start = self.chain.node(self.chain.forks.finalized).height + 1
        while start <= status.height:
            entries = await self.sync.blocks(peer, start, min(BATCH, status.height - start + 1))
            if not entries:
                return
            fetched: list[tuple[bytes, bytes, Block]] = []
            cut = False  # the rest of this peer's chain is of no use
            for e in entries:
                if self.chain.has(e.block_hash):
                    continue
                if e.block_hash in self.importer.refused:
                    cut = True
                    break
                raw = e.raw or await self.sync.content(peer, e.block_hash)
                if sha256(raw) != e.block_hash:
                    self.net.penalise(peer, penalties.LIE, "sync block does not match its hash")
                    cut = True
                    break
                fetched.append((e.block_hash, raw, Block.decode(raw)))
            async with trio.open_nursery() as nursery:
                # the batch's checks run ahead, in parallel, while its blocks import one
                # by one (their checks then find the answers in the checker's caches);
                # ahead work stops at blocks already imported and, unless an import
                # failed, is left to finish (cancelling a job would kill its worker)
                nursery.start_soon(self._check_ahead, peer, fetched)
                complete = await self._import_in_order(peer, fetched)
                if not complete:
                    nursery.cancel_scope.cancel()
            if cut or not complete:
                return
            start = entries[-1].height + 1

    async def _check_ahead(self, peer: ID, fetched: list[tuple[bytes, bytes, Block]]) -> None:
        """Run a batch's expensive checks ahead, in parallel, a few at a time: every zk
        verification and every model check that needs only the block, its model and its
        parent's (all cached by value in the checker, so the imports find their answers).
        Any failure here is left for the import to find and judge."""
        limiter = trio.CapacityLimiter(AHEAD)
        rule = rule_for(self.chain.genesis)
        checker = self.importer.checker

        async def verify(check: VerifyProof) -> None:
            async with limiter:
                with suppress(WorkerError):
                    await checker.verify(check)

        async def model(block: Block, parent: tuple[bytes, bytes]) -> None:
            async with limiter:
                with suppress(WorkerError, InvalidError, SyncError, LookupError):
                    named = (*blocks.block_blobs(block), *(h for h in parent if h))
                    blobs = {h: await self.importer.fetch_blob(h, [peer]) for h in named}
                    await checker.answer(rule.model_checks(block, *parent), blobs)

        # the batch's global models and velocities, by block
        states = {h: (b.model_hash, b.velocity_hash) for h, _, b in fetched}
        async with trio.open_nursery() as nursery:
            for h, _, b in fetched:
                if self.chain.has(h):
                    continue  # imported already: its checks are done
                parent = states.get(b.parent) or self._state_of(b.parent)
                for job in (
                    *(partial(verify, c) for c in blocks.proof_verifications(b)),
                    partial(model, b, parent),
                ):
                    await limiter.acquire()  # keep the queue short: start as slots free up
                    limiter.release()
                    nursery.start_soon(job)

    def _state_of(self, block_hash: bytes) -> tuple[bytes, bytes]:
        """The global model and velocity hashes of a stored block (b"" if not stored)."""
        info = self.chain.parent_info(block_hash)
        return (b"", b"") if info is None else (info.model_hash, info.velocity_hash)

    async def _import_in_order(self, peer: ID, fetched: list[tuple[bytes, bytes, Block]]) -> bool:
        for _, raw, block in fetched:
            try:
                if not await self.importer.import_block(block, raw, [peer]):
                    return False
            except InvalidError as exc:
                self.net.penalise(peer, penalties.LIE, f"served an invalid block: {exc}")
                return False
            self.progress.imported(1, trio.current_time())
        return True

    @staticmethod
    def _rank(status: Status) -> tuple[int, bytes]:
        return preference(status.score, status.head)

    def _better(self, status: Status) -> bool:
        """Would fork choice prefer the peer's head to ours (as it claims it)?"""
        ours = self.chain.node(self.chain.head)
        return self._rank(status) < preference(ours.score, ours.hash)
