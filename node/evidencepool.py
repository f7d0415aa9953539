"""Evidence of misbehaviour waiting for a block (protocol v5, consensus.evidence).

Evidence comes from this node's own round pool (it saw two messages where one is
allowed, or a message that fails a check anyone can run), from its aggregator (a vector,
self mask or pair commitment its worker jobs proved wrong), or by gossip on the round
topic, where it is checked like anything else, the expensive kinds in the worker pool:
evidence that proves nothing is its sender's lie (REJECT). One piece per offender is
kept, at most MAX_PENDING, and only while a block could still carry it: the offender not
excluded on the head already and the offence recent enough. Our blocks carry what still applies on their parent
(consensus.evidence.apply), so a block never fails on its own evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consensus import evidence
from consensus.crypto import short
from consensus.errors import InvalidError
from consensus.types import MAX_EVIDENCE_BYTES, MAX_EVIDENCE_PER_BLOCK, Evidence
from node.chain import Chain
from node.checker import Checker, CheckIncomplete
from p2p import Verdict

log = logging.getLogger("zkpot.node")

MAX_PENDING = 32
MAX_REFUTED = 4096


class EvidencePool:
    def __init__(self, chain: Chain, current_round: Callable[[], int]) -> None:
        self.genesis = chain.genesis
        self.chain_id = chain.chain_id
        self.chain = chain
        self.current_round = current_round
        self.pending: dict[bytes, tuple[Evidence, int]] = {}  # offender -> (evidence, round)
        self.refuted: set[bytes] = set()  # hashes of gossiped pieces their check refuted

    def add(self, ev: Evidence) -> Verdict:
        """Evidence from gossip or from our own round pool; InvalidError if it proves
        nothing (the sender lied), IGNORE if it is known, stale or of no use here."""
        if self.genesis.rule.exclusion_rounds == 0:
            return Verdict.IGNORE
        off = evidence.offence(self.genesis, self.chain_id, ev)
        if not self.wants(off):
            return Verdict.IGNORE
        key, rnd = off.key, off.round
        self.pending[key] = (ev, rnd)
        log.warning(
            "evidence of %s by %s (round %d)",
            evidence.KIND_NAMES[ev.kind],
            short(key),
            rnd,
        )
        return Verdict.ACCEPT

    async def add_checked(self, ev: Evidence, checker: Checker) -> Verdict:
        """Evidence from gossip: one of an expensive kind is taken (and relayed) only once
        its check, answered here, proves the offence (InvalidError if it refutes it). Its
        check is skipped when the evidence would be of no use here anyway."""
        h = ev.hash()
        if h in self.refuted:
            raise InvalidError("Evidence: its check refuted it here before")
        off = evidence.offence(self.genesis, self.chain_id, ev)
        if off.check is not None:
            if not self.wants(off):
                return Verdict.IGNORE
            try:
                answers = await checker.answer([off.check], {})
            except CheckIncomplete:
                return Verdict.IGNORE  # no verdict here and now
            try:
                evidence.confirm(off, answers)
            except InvalidError:
                if len(self.refuted) >= MAX_REFUTED:
                    self.refuted.clear()
                self.refuted.add(h)  # a replay costs no second check
                raise
        return self.add(ev)

    def wants(self, off: evidence.Offence) -> bool:
        """Whether evidence of this offence would be of use: its offender has none pending,
        is not excluded already, was a participant, and the offence is recent."""
        if self.genesis.rule.exclusion_rounds == 0:
            return False
        now = self.current_round()
        if off.key in self.pending or len(self.pending) >= MAX_PENDING:
            return False
        if off.round < now - self.genesis.rule.exclusion_rounds or off.round > now + 1:
            return False
        roster = self.chain.roster(self.chain.head)
        return off.key not in roster.excluded_at(now) and off.key in {t.key for t in roster.tenures}

    def for_block(self, parent: bytes, block_round: int) -> tuple[Evidence, ...]:
        """What our block of `block_round` on `parent` carries: every pending piece that
        still applies there, in hash order, within the block's bounds."""
        e = self.genesis.rule.exclusion_rounds
        for key, (_, rnd) in list(self.pending.items()):
            if rnd < block_round - e:
                del self.pending[key]
        try:
            roster = self.chain.roster(parent)
        except LookupError:
            return ()
        chosen: list[Evidence] = []
        size = 0
        for ev in sorted((ev for ev, _ in self.pending.values()), key=lambda ev: ev.hash()):
            n = len(ev.encode())
            if len(chosen) == MAX_EVIDENCE_PER_BLOCK or size + n > MAX_EVIDENCE_BYTES:
                break
            try:
                roster = evidence.apply(self.genesis, self.chain_id, roster, block_round, [ev])
            except InvalidError:
                continue  # not applicable on this parent (carried already, or too old)
            chosen.append(ev)
            size += n
        return tuple(chosen)
