"""The round-message pool: what this node holds of the live rounds, and the round topic's validator.

Commits, the reveal and verified proofs of rounds near the clock, the commits
held until their parent block applies, our own commitment, and the best block
seen per parent (for abstaining). Peers choose round numbers freely, so state
exists only for rounds near the clock (`in_window`) and is pruned by the clock.
Decisions (which commit counts, what to seal) are consensus.policy's.

(Over 300 lines on purpose: the round topic's one validator takes every kind of round
message here, a few lines each; what a message means stays in consensus.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID

from consensus import aggcheck, aggpolicy, evidence, policy, rules
from consensus.crypto import short
from consensus.errors import InvalidError
from consensus.forkchoice import ChainNode
from consensus.secagg import (
    AggMessage,
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
    VectorPart,
)
from consensus.strategy import rule_for
from consensus.types import Block, CommitTx, Evidence, ProofTx, Reveal
from node import aggstate
from node.aggstate import AggState
from node.chain import Chain
from node.checker import Checker, CheckIncomplete
from node.interfaces import Clock
from node.roundclock import RoundClock
from node.roundlog import ProofSeen, RoundLog
from p2p import Verdict
from p2p.gossip import GossipItem

log = logging.getLogger("zkpot.node")

MAX_HELD_COMMITS = 1024
# v7: a VectorPart validated before its update (py-libp2p validates each message in its own
# task, and trio may run them in either order) waits this long for it; at most this many wait
PART_WAIT_MS = 2000
MAX_WAITING_PARTS = 8


@dataclass(frozen=True)
class Mine:
    """Our own commitment this round: the weights stay on this node."""

    weights: bytes
    commit: CommitTx
    commitment: bytes
    mask_secret: int = 0  # protocol v2: this round's mask key (consensus.secagg)


@dataclass
class RoundState:
    commits: dict[bytes, CommitTx] = field(default_factory=dict)
    received_ms: dict[bytes, int] = field(default_factory=dict)
    reveal: Reveal | None = None
    revealed: trio.Event = field(default_factory=trio.Event)
    proofs: dict[bytes, ProofTx] = field(default_factory=dict)  # commit id -> valid proof
    verified_ms: dict[bytes, int] = field(default_factory=dict)  # commit id -> when it was
    mine: Mine | None = None
    blocks: dict[bytes, ChainNode] = field(default_factory=dict)  # parent -> best block seen
    agg: AggState = field(default_factory=AggState)  # protocol v2's aggregation round
    changed: trio.Event = field(default_factory=trio.Event)  # set (and renewed) on progress

    def mask_keys(self, commit_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The mask public keys (protocol v2) of the participants whose commits these are,
        among the commits held here."""
        return {c.participant: c.mask_key for c in map(self.commits.get, commit_ids) if c}

    def add_proof(self, tx: ProofTx, now_ms: int) -> None:
        """A valid proof (the first one kept), and when this node knew it."""
        self.proofs.setdefault(tx.commit_id, tx)
        self.verified_ms.setdefault(tx.commit_id, now_ms)

    def touch(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_until(self, done: Callable[[], bool], deadline_ms: int, clock: Clock) -> None:
        """Until `done()` holds or the deadline passes: phases end when their inputs are in."""
        while not done():
            left = (deadline_ms - clock()) / 1000
            if left <= 0:
                return
            with trio.move_on_after(left):
                await self.changed.wait()

    def arrivals(self) -> list[policy.Arrival]:
        return [
            policy.Arrival(commit_id, c.participant, self.received_ms[commit_id])
            for commit_id, c in self.commits.items()
        ]


class RoundPool:
    def __init__(
        self,
        chain: Chain,
        checker: Checker,
        roundlog: RoundLog,
        clock: Clock,
        roundclock: RoundClock,
        own_peer: ID,
    ) -> None:
        self.genesis = genesis = chain.genesis
        self.chain_id = chain.chain_id
        self.chain = chain
        self.checker = checker
        self.roundlog = roundlog
        self.clock = clock
        self.roundclock = roundclock
        self.own_peer = own_peer
        self.rounds: dict[int, RoundState] = {}
        self.aggregates = rule_for(genesis).aggregates
        # (participant, round, parent) -> (commit, arrival) for commits whose parent is not applied yet
        self.held: dict[tuple[bytes, int, bytes], tuple[CommitTx, int]] = {}
        # v5: misbehaviour this pool can prove goes here (node.evidencepool checks it)
        self.on_evidence: Callable[[Evidence], None] = lambda ev: None
        self._waiting_parts = 0

    # ------------------------------------------------------------------ state

    def mark(self, rnd: int, step: str) -> None:
        """Record when this node reached `step` of round `rnd` (first time only)."""
        times = self.roundlog.record(rnd).times_ms
        times.setdefault(step, self.clock() - self.roundclock.opened_at(rnd))

    def state(self, rnd: int) -> RoundState:
        """Round state; callers only create it for rounds near the clock (`in_window`)."""
        st = self.rounds.get(rnd)
        if st is None:
            st = self.rounds[rnd] = RoundState()
        return st

    def in_window(self, rnd: int) -> bool:
        """Rounds a peer's message may touch: this node's round, two before and one after.

        Without this bound one message could create state for any round (memory) or,
        worse, evict the live round's state.
        """
        cur = self.roundclock.current
        return cur - 2 <= rnd <= cur + 1

    def prune(self, rnd: int) -> None:
        """Driven by the clock only, never by a peer-supplied round. Aggregation state
        (the bulk: masked vectors) is kept only for the rounds a message may still touch."""
        for old in [r for r in self.rounds if r < rnd - 8]:
            del self.rounds[old]
        for r, st in self.rounds.items():
            if r < rnd - 2 and st.agg.selections:
                st.agg = AggState()

    def record_commit(self, rnd: int, c: CommitTx, received_ms: int | None = None) -> None:
        st = self.state(rnd)
        commit_id = c.hash()
        if commit_id not in st.commits:
            st.commits[commit_id] = c
            st.received_ms[commit_id] = self.clock() if received_ms is None else received_ms
            self.roundlog.record(rnd).commits[commit_id] = c.participant
            st.touch()

    def hold_commit(self, c: CommitTx) -> None:
        """Bounded: at most one held commit per (participant, round, parent)."""
        key = (c.participant, c.round, c.parent)
        if key not in self.held and len(self.held) < MAX_HELD_COMMITS:
            self.held[key] = (c, self.clock())

    def on_reveal(self, reveal: Reveal) -> None:
        st = self.state(reveal.round)
        if st.reveal is None:
            self.mark(reveal.round, "revealed")
            st.reveal = reveal
            rec = self.roundlog.record(reveal.round)
            rec.revealed, rec.sealed, rec.batch_index = True, reveal.sealed, reveal.batch.index
            st.revealed.set()
            self.roundclock.observe(revealed=reveal.round)
            st.touch()

    def on_block_received(self, block: Block) -> None:
        """A block of a round near ours passed the cheap rules (the round log's timing)."""
        if self.in_window(block.round):
            self.mark(block.round, "block_received")

    def on_block_applied(self, block: Block, node: ChainNode, head_changed: bool) -> None:
        """A valid block is in the store: release its children's commits, count its txs;
        if it became head, the next round opens now."""
        self._release_commits(node.hash)
        if head_changed:
            self.roundclock.observe(head_round=block.round, hold=self._hold_after(block))
        st = self.rounds.get(block.round)
        if st is None:
            return
        st.blocks[block.parent] = policy.best_of(st.blocks.get(block.parent), node)
        if head_changed:
            self.mark(block.round, "block")
        if st.reveal is None or st.reveal == block.reveal:  # its txs count as seen
            for p in block.proofs:
                st.add_proof(p, self.clock())
            st.touch()
            for c in block.commits:
                self.record_commit(block.round, c)
        rec = self.roundlog.record(block.round)
        if self.chain.head == node.hash or rec.block is None:
            rec.block, rec.proposer = node.hash, block.proposer

    def _hold_after(self, block: Block) -> Callable[[], int] | None:
        """A keep-parent head must not cut short its round's aggregation (v4): the next
        round opens once that aggregation has been quiet a while (consensus.aggpolicy)."""
        if not self.aggregates or block.members or not self.in_window(block.round):
            return None
        agg, seen, fallback = (
            self.state(block.round).agg,
            self.clock(),
            self.genesis.timing.fallback_ms,
        )
        return lambda: aggpolicy.keep_parent_opens_next_at(seen, agg.last_ms, fallback)

    def _release_commits(self, parent: bytes) -> None:
        for key in [k for k in self.held if k[2] == parent]:
            c, received = self.held.pop(key)
            if c.participant not in (self.chain.participants(parent, c.round) or ()):
                continue
            if self.in_window(c.round) and policy.admits_commit(
                self.state(c.round).commits.values(), c
            ):
                self.record_commit(c.round, c, received)
        for key in [k for k in self.held if not self.in_window(k[1])]:
            del self.held[key]

    # ------------------------------------------------------------------ validation

    async def validate(self, item: GossipItem, forwarder: ID) -> Verdict:
        """The round topic's validator: commits, reveals and proofs."""
        if forwarder == self.own_peer:
            return Verdict.ACCEPT  # our own publish: already recorded and checked
        try:
            if isinstance(item, CommitTx):
                return self._on_commit(item)
            if isinstance(item, Reveal):
                return self._on_gossip_reveal(item)
            if isinstance(item, ProofTx):
                return await self._on_proof(item)
            if isinstance(item, VectorPart):
                await self._await_update(item)
            if isinstance(item, AggMessage):
                return self._counted(item)
            return Verdict.REJECT
        except InvalidError as exc:
            log.info("rejected %s from %s: %s", type(item).__name__, forwarder, exc)
            return Verdict.REJECT

    async def _await_update(self, part: VectorPart) -> None:
        """Give a part's update, sent just before it, a moment to be validated: both
        arrive together and run concurrently. Bounded, so junk parts cannot pile up."""
        found = self._selection(part.selection)
        if found is None or self._waiting_parts >= MAX_WAITING_PARTS:
            return
        st = found[0]
        self._waiting_parts += 1
        try:
            await st.wait_until(
                lambda: part.update in st.agg.update_ids, self.clock() + PART_WAIT_MS, self.clock
            )
        finally:
            self._waiting_parts -= 1

    def _counted(self, item: AggMessage) -> Verdict:
        """on_agg, with the verdict counted in the round's record (`aggregation`)."""
        try:
            verdict = self.on_agg(item)
        except InvalidError:
            self._count(item, "refused:")
            raise
        if verdict is Verdict.ACCEPT:
            self._count(item, "")
        return verdict

    def _count(self, item: AggMessage, prefix: str) -> None:
        if isinstance(item, Selection):
            rnd = item.round
        else:
            found = self._selection(item.selection)
            if found is None:
                return
            rnd = found[1].round
        if self.in_window(rnd):
            counts = self.roundlog.record(rnd).aggregation
            counts[prefix + item.NAME] = counts.get(prefix + item.NAME, 0) + 1

    def on_agg(self, item: AggMessage) -> Verdict:
        """An aggregation message (ours too: recorded before it is published)."""
        if isinstance(item, Selection):
            if not self.in_window(item.round) or not self.aggregates:
                return Verdict.IGNORE
            members = self.chain.participants(item.parent, item.round)
            if members is None:
                return Verdict.IGNORE  # its parent is not here (yet)
            aggcheck.check_selection(self.genesis, self.chain_id, item, members)
            st = self.state(item.round)
            committer = {c: commit.participant for c, commit in st.commits.items()}
            sealed = () if st.reveal is None else st.reveal.sealed
            if not aggcheck.proposer_sealed(item, sealed, committer):
                return Verdict.IGNORE  # no sealed commit of its proposer here (yet)
            self._equivocation(st, None, item)
            return self._touched(st, st.agg.add_selection(item, self.clock()))
        found = self._selection(item.selection)
        if found is None:
            return Verdict.IGNORE
        st, sel = found
        if isinstance(item, MaskedUpdate):
            aggcheck.check_update(self.genesis, self.chain_id, sel, item)
            added = st.agg.add_update(item)
            um = st.agg.unmasks.get(item.selection, {}).get(item.member)
            if added and um is not None and not aggcheck.unmask_opens(item, um):
                # its Unmask came first and could not be checked then: a wrong seed must
                # not stand in for the seed the others' shares recover
                del st.agg.unmasks[item.selection][item.member]
                self.on_evidence(evidence.bad_unmask(sel, item, um))
            return self._touched(st, added)
        if isinstance(item, VectorPart):
            upd = st.agg.update_ids.get(item.update)
            if upd is None:
                return Verdict.IGNORE  # its update is not here (yet): gossip may reorder
            aggcheck.check_part(self.genesis, upd, item)
            return self._touched(st, st.agg.add_part(item))
        if isinstance(item, Complete):
            aggcheck.check_complete(self.chain_id, sel, item)
            return self._touched(st, st.agg.add_complete(item, self.clock()))
        if isinstance(item, SeedShare):
            comp = st.agg.completes.get(item.selection)
            owner = st.agg.updates.get(item.selection, {}).get(item.owner)
            if comp is None or owner is None or owner.hash() != item.update:
                return Verdict.IGNORE  # its context is not here (yet): gossip may reorder
            try:
                aggcheck.check_seed_share(self.chain_id, sel, comp, owner, item)
            except InvalidError:
                self.on_evidence(evidence.false_share(sel, owner, item))
                raise
            self._equivocation(st, sel, item)
            return self._touched(st, st.agg.add_share(item))
        if isinstance(item, Dispute):
            if not aggcheck.check_dispute(
                self.chain_id, sel, item, st.agg.updates.get(sel.hash(), {})
            ):
                return Verdict.IGNORE  # an update it names is not here (yet)
            return self._touched(st, st.agg.add_dispute(item))
        if isinstance(item, PairReveal):
            dispute = st.agg.disputes.get(item.selection)
            keys = st.mask_keys(sel.proofs)
            if dispute is None or not {item.member, item.partner} <= set(keys):
                return Verdict.IGNORE  # its context is not here (yet): gossip may reorder
            aggcheck.check_reveal(self.chain_id, dispute, item, keys)
            return self._touched(st, st.agg.add_reveal(item))
        upd = st.agg.updates.get(item.selection, {}).get(item.member)
        try:
            aggcheck.check_unmask(self.chain_id, sel, item, upd)
        except InvalidError:
            if upd is not None:
                self.on_evidence(evidence.bad_unmask(sel, upd, item))
            raise
        self._equivocation(st, sel, item)
        return self._touched(st, st.agg.add_unmask(item))

    def _equivocation(
        self, st: RoundState, sel: Selection | None, item: Selection | Unmask | SeedShare
    ) -> None:
        other = st.agg.conflicting(item)
        if other is not None:
            self.on_evidence(evidence.equivocation(sel, other, item))

    def _selection(self, h: bytes) -> tuple[RoundState, Selection] | None:
        for st in self.rounds.values():
            sel = st.agg.selections.get(h)
            if sel is not None:
                return st, sel
        return None

    def _touched(self, st: RoundState, added: bool) -> Verdict:
        if added:
            st.agg.last_ms = self.clock()
            st.touch()
        return aggstate.verdict(added)

    def _on_commit(self, c: CommitTx) -> Verdict:
        members = self.chain.participants(c.parent, c.round)
        if members is None:  # parent not here: filter by the head's roster until it is
            members = self.chain.known_participants(c.round)
        try:
            rules.check_commit(self.genesis, self.chain_id, c, members)
        except InvalidError:
            self.on_evidence(evidence.bad_mask_key(c))  # the pool keeps it if it proves that
            raise
        if not self.in_window(c.round):
            return Verdict.IGNORE
        if not self.chain.has(c.parent):
            # Its parent may be a block we are still validating: keep it (with its
            # arrival time, which decides sealing) until that block applies.
            self.hold_commit(c)
            return Verdict.IGNORE
        if not policy.admits_commit(self.state(c.round).commits.values(), c):
            return Verdict.IGNORE
        self.record_commit(c.round, c)
        return Verdict.ACCEPT

    def _on_gossip_reveal(self, reveal: Reveal) -> Verdict:
        rules.check_reveal(self.genesis, self.chain_id, reveal)
        if not self.in_window(reveal.round):
            return Verdict.IGNORE
        first = self.state(reveal.round).reveal
        if first is not None and first != reveal:
            log.warning(
                "publisher equivocation: a second, different reveal for round %d", reveal.round
            )
            self.roundlog.record(reveal.round).notes.append(
                "publisher equivocated: second reveal refused"
            )
            return Verdict.REJECT
        self.on_reveal(reveal)
        return Verdict.ACCEPT

    async def _on_proof(self, tx: ProofTx) -> Verdict:
        st = self.rounds.get(tx.round) if self.in_window(tx.round) else None
        if st is None:
            return Verdict.IGNORE
        commit = st.commits.get(tx.commit_id)
        if st.reveal is None or commit is None or tx.commit_id in st.proofs:
            return Verdict.IGNORE  # unknown context, or a valid proof is already held
        check = rules.proof_check(self.genesis, self.chain_id, st.reveal, commit, tx)
        seen = ProofSeen(tx.participant, tx.commit_id, tx.k, None)
        self.roundlog.record(tx.round).proofs[tx.commit_id] = seen
        try:
            ok, reason = await self.checker.verify(check)
        except CheckIncomplete as exc:  # no verdict here now; the block will carry it
            log.info("proof of %s not checked: %s", short(tx.participant), exc)
            return Verdict.IGNORE
        if not ok:
            seen.valid, seen.reason = False, reason
            raise InvalidError(f"ProofTx: {reason}")
        st.add_proof(tx, self.clock())
        st.touch()
        seen.valid = True
        self.mark(tx.round, f"proof_verified:{short(tx.participant)}")
        return Verdict.ACCEPT
