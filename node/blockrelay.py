"""The blocks topic's validator: relay on the cheap rules, then import in the background.

py-libp2p holds a message while its validator runs, and a block's full validation
(its model fetched over sync, re-evaluated, proofs verified in the worker pool)
takes seconds: held that long, blocks reach the network late and validations pile
up in py-libp2p's slots. So the validator decides relay on what costs no I/O and no
prover: the canonical decode (p2p.gossip, which hands over the raw bytes too), at
most one block per (proposer, round) relayed, then the importer's `admit` (no
duplicate, the parent applied or being validated, above finality, and
`blocks.on_block`: chain id, every signature, the proposer a participant, header,
reveal, commits, the proofs' cheap rules, ranking). Only a signed block passes, so a
malicious participant makes the network carry at most one bad block per round,
and a forged one cannot take an honest proposer's place.

The full validation (`importer.complete`) then runs as a task in this relay's
nursery (`run`) on the admitted block; copies, sync's included, wait for its
flight. A block that fails it is refused and never applied, and its proposer, who
signed it, is penalised; the peer that forwarded it is not: it relayed on the same
cheap rules we did.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID

from consensus.crypto import sha256, short
from consensus.errors import InvalidError
from consensus.types import Block
from node.checker import CheckIncomplete
from node.importer import MAX_REFUSED, BlockImporter, CheckedBlock
from node.interfaces import Net
from p2p import BlockAnnounce, SyncError, Verdict, penalties
from p2p.gossip import GossipItem
from p2p.identity import peer_id_of_key, public_key_of

if TYPE_CHECKING:
    # libp2p's trio-typing stubs shadow trio's own annotations; TaskStatus lives there.
    from trio_typing import TaskStatus

log = logging.getLogger("zkpot.node")

FULL_VALIDATION_S = 60.0  # model fetch plus the prover pool's queue; then give up, no blame


class BlockRelay:
    def __init__(
        self, importer: BlockImporter, net: Net, full_validation_s: float = FULL_VALIDATION_S
    ) -> None:
        self.importer = importer
        self.net = net
        self.full_validation_s = full_validation_s
        self.relayed: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()  # bounded
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the full validations the validator starts; until then it relays nothing."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def validate(self, item: GossipItem, raw: bytes, forwarder: ID) -> Verdict:
        """The blocks topic's validator. It never awaits: the relay decision is immediate."""
        if isinstance(item, BlockAnnounce):
            return Verdict.IGNORE  # blocks above the inline limit come by sync
        if not isinstance(item, Block):
            return Verdict.REJECT
        imp = self.importer
        h = sha256(raw)
        if forwarder == self.net.peer_id and h in imp.own:
            return Verdict.ACCEPT  # our own block, already validated and applied
        if self._nursery is None:
            return Verdict.IGNORE  # not running (starting or stopping)
        key = (item.proposer, item.round)
        if key in self.relayed:
            if self.relayed[key] != h:
                log.info("round %d: a second block by %s, not relayed", item.round, short(key[0]))
            return Verdict.IGNORE
        sources = [forwarder, *self._peers_with_pubkey(item.proposer)]
        try:
            checked = imp.admit(item, raw, block_hash=h)
        except InvalidError as exc:
            log.info("rejected block %s from %s: %s", short(h, 12), forwarder, exc)
            return Verdict.REJECT
        if not isinstance(checked, CheckedBlock):
            return Verdict.IGNORE  # a duplicate, refused, or not placeable now (see admit)
        # nothing between admit and start_soon may raise: the flight must reach complete
        self.relayed[key] = checked.hash
        while len(self.relayed) > MAX_REFUSED:
            self.relayed.popitem(last=False)
        self._nursery.start_soon(self._complete, checked, sources)
        return Verdict.ACCEPT

    async def _complete(self, checked: CheckedBlock, sources: list[ID]) -> None:
        """The full validation and import of a relayed block; never raises."""
        h = checked.hash
        with trio.move_on_after(self.full_validation_s) as scope:
            try:
                await self.importer.complete(checked, sources)
            except InvalidError as exc:
                log.info("relayed block %s failed full validation: %s", short(h, 12), exc)
                self.net.penalise(
                    peer_id_of_key(checked.block.proposer),
                    penalties.INVALID,
                    f"signed an invalid block: {exc}",
                )
            except SyncError as exc:
                log.debug("block %s: model not available: %s", short(h, 12), exc)
            except CheckIncomplete as exc:  # no verdict: a later copy or sync tries again
                log.info("block %s: not checked: %s", short(h, 12), exc)
            except Exception:  # a bug here must never end the node
                log.exception("importing block %s failed unexpectedly", short(h, 12))
        if scope.cancelled_caught:
            log.info("block %s: not validated within %.0f s", short(h, 12), self.full_validation_s)

    def _peers_with_pubkey(self, pub: bytes) -> list[ID]:
        return [p for p in self.net.connected_peers() if public_key_of(p) == pub]
