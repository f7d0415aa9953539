"""The node's runtime, wired: the round loop drives the roles; gossip and sync feed the pool
and the importer.

Per round r (consensus.schedule): participants train and commit (node.participant);
the publisher reveals batch r and the sealed commits (node.publisher); proofs and
blocks arrive by gossip (node.roundpool validates round messages, node.blockrelay
blocks, which node.importer then imports) or by sync (node.syncer). A round ends as soon as a block of it becomes head
(or a later reveal shows this node fell behind), at the latest round_ms after it
opened (node.roundclock). Every task lives in the nursery of `run`; a round's tasks
in that round's nursery, cancelled when the next round opens; a gossiped block's full
validation in the block relay's, which `run` owns.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from consensus import membership, schedule
from consensus.crypto import SigningKey
from consensus.errors import InvalidError
from consensus.roles import Roles, roles_of
from consensus.strategy import rule_for
from consensus.types import EvalBatch, Evidence, JoinRequest, Membership
from node.aggregator import Aggregation
from node.behaviour import HONEST, Behaviour
from node.blockrelay import BlockRelay
from node.chain import Chain
from node.checker import Checker
from node.context import NodeContext
from node.evidencepool import EvidencePool
from node.importer import BlockImporter
from node.interfaces import Clock, Net, Outgoing, Prover, Sync, now_ms, sleep_until
from node.membershippool import MembershipPool
from node.participant import Participant
from node.publisher import Publisher
from node.roundclock import RoundClock
from node.roundlog import RoundLog
from node.roundpool import RoundPool
from node.syncer import Syncer, Wakeup
from p2p import GossipItem, TopicKind, Verdict
from p2p.topics import MAX_GOSSIP_PAYLOAD

log = logging.getLogger("zkpot.node")


class Engine:
    def __init__(
        self,
        *,
        key: SigningKey,
        chain: Chain,
        net: Net,
        sync: Sync,
        prover: Prover,
        verifier: Prover,
        artifacts: Path,
        roundlog: RoundLog,
        data_file: str | None,
        batches: list[EvalBatch] | None,
        verify_timeout_s: float,
        prove_timeout_s: float,
        clock: Clock = now_ms,
        behaviour: Behaviour = HONEST,
    ) -> None:
        g = self.genesis = chain.genesis
        self.chain = chain
        self.net = net
        self.clock = clock
        self.key = key
        checker = Checker(verifier, artifacts, g.task.architecture, verify_timeout_s)
        self.checker = checker
        self.rounds = RoundClock(g, clock)
        self.pool = RoundPool(chain, checker, roundlog, clock, self.rounds, net.peer_id)
        wakeup = Wakeup()
        self.importer = BlockImporter(
            chain,
            checker,
            net,
            sync,
            want_sync=wakeup.set,
            on_received=self.pool.on_block_received,
            on_applied=self.pool.on_block_applied,
        )
        self.relay = BlockRelay(self.importer, net)
        self.syncer = Syncer(chain, self.importer, net, sync, wakeup)
        self.membership = MembershipPool(chain, lambda: self.current_round() or 0)
        self.evidence = EvidencePool(chain, lambda: self.current_round() or 0)
        self._evidence_out, self._evidence_in = trio.open_memory_channel[Evidence](64)
        self.pool.on_evidence = self._found
        self.participant: Participant | None = None
        self.publisher: Publisher | None = None
        ctx = NodeContext(
            key, chain, rule_for(g), prover, self.publish, artifacts, clock, behaviour
        )
        if data_file is not None:  # a participant, now or once admitted (it plays when it is)
            aggregation = None
            if ctx.rule.aggregates:
                aggregation = Aggregation(ctx, timeout_s=prove_timeout_s)
                aggregation.found = self._found
            self.participant = Participant(
                ctx,
                pool=self.pool,
                importer=self.importer,
                data_file=data_file,
                prove_timeout_s=prove_timeout_s,
                aggregation=aggregation,
                membership=self.membership,
                evidence=self.evidence,
            )
        if key.public == g.publisher:
            self.publisher = Publisher(ctx, pool=self.pool, batches=batches or [])
        net.gossip.set_validator(TopicKind.ROUND, self._validate_round)
        net.gossip.set_validator(TopicKind.BLOCKS, self.relay.validate)

    async def _validate_round(self, item: GossipItem, raw: bytes, forwarder: ID) -> Verdict:
        """The round topic: changes of the participant set go to their pool, the rest to
        the round-message pool."""
        if isinstance(item, Evidence):
            if forwarder == self.net.peer_id:
                return Verdict.ACCEPT  # our own: the pool checked it
            try:
                return await self.evidence.add_checked(item, self.checker)
            except InvalidError as exc:
                log.info("rejected Evidence from %s: %s", forwarder, exc)
                return Verdict.REJECT
        if not isinstance(item, JoinRequest | Membership):
            return await self.pool.validate(item, forwarder)
        if forwarder == self.net.peer_id:
            return Verdict.ACCEPT  # our own publish: `submit` checked it
        try:
            return self._membership_verdict(item, str(forwarder))
        except InvalidError as exc:
            log.info("rejected %s from %s: %s", item.NAME, forwarder, exc)
            return Verdict.REJECT

    def _membership_verdict(
        self, item: JoinRequest | Membership, forwarder: str | None = None
    ) -> Verdict:
        """`forwarder`: the gossip peer that brought it (None: this node's own API)."""
        if isinstance(item, JoinRequest):
            return self.membership.on_request(item, forwarder)
        return self.membership.on_change(item)

    async def submit(self, item: JoinRequest | Membership) -> str:
        """From this node's API: checked as if it came by gossip, then gossiped. Returns
        what happened, for the caller; InvalidError if it is not valid at all."""
        verdict = self._membership_verdict(item)
        if verdict is Verdict.ACCEPT:
            await self.publish(item)
            return "accepted and relayed"
        return "ignored: already known, or not applicable on this node's head now"

    def participants(self) -> dict[str, Any]:
        """The participant set on our head, with the pending requests and changes (API):
        pruned first, so what blocks carried is no longer listed as pending."""
        rnd = self.current_round() or 0
        self.membership.prune(rnd)
        roster = self.chain.roster(self.chain.head)
        return {
            "round": rnd,
            "head": self.chain.head.hex(),
            "publisher": self.genesis.publisher.hex(),
            "participants": [
                {
                    "key": t.key.hex(),
                    "joined": t.joined,
                    "left": t.left,
                    "active": t.holds(rnd),
                    "excluded": t.key in roster.excluded_at(rnd),
                }
                for t in roster.tenures
            ],
            "excluded": [
                {"key": k.hex(), "until_round": until}
                for k, until in roster.excluded
                if rnd < until
            ],
            "requests": [
                {"key": k.hex(), "signature": r.signature.hex()}
                for k, r in self.membership.requests.items()
            ],
            "pending": [
                {
                    "kind": membership.KIND_NAMES[tx.kind],
                    "key": tx.key.hex(),
                    "from_round": tx.from_round,
                    "hash": h.hex(),
                }
                for h, tx in self.membership.pending.items()
            ],
        }

    @property
    def roles(self) -> Roles:
        """What this node is now: a participant of the current round on the head's roster."""
        rnd = self.current_round()
        head = self.chain.roster(self.chain.head)
        return roles_of(self.genesis, self.key.public, head.at(rnd if rnd is not None else 0))

    def current_round(self) -> int | None:
        """The round this node is in (None before genesis), for the API."""
        if self.clock() < self.genesis.timing.genesis_ms:
            return None
        return self.rounds.current

    async def publish(self, item: Outgoing) -> None:
        try:
            await self.net.gossip.publish(item)
        except Exception as exc:  # no peers yet, or backpressure timed out
            log.warning("could not gossip %s: %s", item.NAME, exc)

    def _found(self, ev: Evidence) -> None:
        """Misbehaviour our round pool can prove: kept for our blocks, and gossiped so
        every proposer can carry it (published by `_publish_evidence`)."""
        try:
            verdict = self.evidence.add(ev)
        except InvalidError:
            return  # the messages prove nothing after all (e.g. a forged signature)
        if verdict is Verdict.ACCEPT and len(ev.encode()) <= MAX_GOSSIP_PAYLOAD:
            # (a wrong vector in parts, v7, is quoted whole: only our own blocks carry it)
            with contextlib.suppress(trio.WouldBlock):  # else kept for our own blocks only
                self._evidence_out.send_nowait(ev)

    async def _publish_evidence(self) -> None:
        async for ev in self._evidence_in:
            await self.publish(ev)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.relay.run)
            nursery.start_soon(self._publish_evidence)
            nursery.start_soon(self.syncer.run)
            await self._round_loop()
            nursery.cancel_scope.cancel()

    async def _round_loop(self) -> None:
        g = self.genesis
        await sleep_until(self.clock, g.timing.genesis_ms)
        head = self.chain.block(self.chain.head)
        self.rounds.start(None if head is None else head.round)
        while True:
            rnd = self.rounds.current
            opened = self.rounds.opened_at(rnd)
            self.pool.prune(rnd)
            if not schedule.round_exists(g, rnd):
                log.info(
                    "evaluation plan exhausted after %d rounds; following only",
                    g.eval_plan.num_batches,
                )
                await trio.sleep_forever()
            self.pool.roundlog.record(rnd).opened_ms = opened
            end = schedule.round_end(g, opened)
            # Joining mid-round: take part only if the commit deadline is still ahead.
            if self.clock() < schedule.commit_deadline(g, opened) - 1:
                async with trio.open_nursery() as nursery:
                    if self.participant is not None:
                        nursery.start_soon(self.participant.play, rnd, opened)
                    if self.publisher is not None:
                        nursery.start_soon(self.publisher.play, rnd, opened)
                    await self.rounds.wait_past(rnd, end)
                    nursery.cancel_scope.cancel()
            else:
                await self.rounds.wait_past(rnd, end)
            self.rounds.expire(rnd)  # no block in time: the next round opens at `end`
