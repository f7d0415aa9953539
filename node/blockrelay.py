"""The blocks topic's validator: relay on the cheap rules, then import in the background.

py-libp2p holds a message while its validator runs, and a block's full validation
(its model fetched over sync, re-evaluated, proofs verified in the worker pool)
takes seconds: held that long, blocks reach the network late and validations pile
up in py-libp2p's slots. So the validator decides relay on what costs no I/O and no
prover: the canonical decode (p2p.gossip), then `blocks.on_block` (chain id, every
signature, the proposer a genesis participant, header, reveal, commits, the proofs'
cheap rules, ranking), the parent applied or being validated, no duplicate, and at
most one block per (proposer, round) relayed. Only a signed block passes, so a
malicious participant makes the network carry at most one bad block per round,
and a forged one cannot take an honest proposer's place.

The full validation then runs as a task in this relay's nursery (`run`), through
the importer's flight (copies wait for it, sync included). A block that fails it
is refused and never applied, and its proposer, who signed it, is penalised; the
peer that forwarded it is not: it relayed on the same cheap rules we did.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID

from consensus import blocks
from consensus.crypto import sha256, short
from consensus.errors import InvalidError
from consensus.types import Block, Genesis
from node.checker import CheckIncomplete
from node.importer import MAX_REFUSED, BlockImporter, Flight
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
        self,
        genesis: Genesis,
        cid: bytes,
        importer: BlockImporter,
        net: Net,
        full_validation_s: float = FULL_VALIDATION_S,
    ) -> None:
        self.genesis = genesis
        self.cid = cid
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

    async def validate(self, item: GossipItem, forwarder: ID) -> Verdict:
        """The blocks topic's validator. It never awaits: the relay decision is immediate."""
        if isinstance(item, BlockAnnounce):
            return Verdict.IGNORE  # blocks above the inline limit come by sync
        if not isinstance(item, Block):
            return Verdict.REJECT
        imp = self.importer
        raw = item.encode()
        h = sha256(raw)
        if forwarder == self.net.peer_id and h in imp.own:
            return Verdict.ACCEPT  # our own block, already validated and applied
        if self._nursery is None:
            return Verdict.IGNORE  # not running (starting or stopping)
        if imp.chain.has(h) or h in imp.refused or imp.flight(h) is not None:
            return Verdict.IGNORE  # a duplicate: relayed (or refused) once already
        key = (item.proposer, item.round)
        if key in self.relayed:
            if self.relayed[key] != h:
                log.info("round %d: a second block by %s, not relayed", item.round, short(key[0]))
            return Verdict.IGNORE
        parent = imp.parent_for_gossip(item, h)
        if parent is None:
            return Verdict.IGNORE  # parent unknown (sync is woken) or below finality
        pinfo, after = parent
        try:
            blocks.on_block(self.genesis, self.cid, pinfo, item)
        except InvalidError as exc:
            imp.refuse(h, str(exc))
            log.info("rejected block %s from %s: %s", short(h, 12), forwarder, exc)
            return Verdict.REJECT
        self.relayed[key] = h
        while len(self.relayed) > MAX_REFUSED:
            self.relayed.popitem(last=False)
        sources = [forwarder, *self._peers_with_pubkey(item.proposer)]
        flight = imp.begin(h, item)
        self._nursery.start_soon(self._complete, flight, raw, h, sources, after)
        return Verdict.ACCEPT

    async def _complete(
        self, flight: Flight, raw: bytes, h: bytes, sources: list[ID], after: Flight | None
    ) -> None:
        """The full validation and import of a relayed block; never raises."""
        block = flight.block
        with trio.move_on_after(self.full_validation_s) as scope:
            try:
                await self.importer.fly(flight, raw, h, sources, after)
            except InvalidError as exc:
                log.info("relayed block %s failed full validation: %s", short(h, 12), exc)
                self.net.penalise(
                    peer_id_of_key(block.proposer),
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
