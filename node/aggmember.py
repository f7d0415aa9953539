"""The aggregation round on a participant's node, the member's side (consensus.secagg
says what each message means, consensus.aggpolicy what an honest member does;
node.aggregator is the proposer's side).

A member answers, with its masked vector (alone it reveals nothing), only the
selection of the proposer whose turn it is over the round's proofs; reveals its
self-mask seed for the first clean Complete of the round only, so no two computable
sums differ by one member; when a Dispute names it with a partner whose update
disagrees with its own, reveals that pair's shared point so the liar is named alone;
and (version 5) reveals its share of the seed of a member silent after the Complete it
unmasked, so that sum still finishes. (A little over 300 lines: the member's four
decisions share the one serve loop that wakes them.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from consensus import aggpolicy, masking, rules, schedule, secagg
from consensus.crypto import short
from consensus.rules import sign
from consensus.secagg import SeedShare, Selection, Unmask
from consensus.types import EvalBatch, Evidence
from node.context import NodeContext, Role
from node.memo import Memo
from node.roundpool import Mine, RoundState
from prover.client import Commit, Evaluate, MaskVector
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")


class Member(Role):
    def __init__(self, ctx: NodeContext, *, timeout_s: float) -> None:
        super().__init__(ctx)
        self.arch = self.genesis.task.architecture
        self.timeout_s = timeout_s
        self.found: Callable[[Evidence], None] = lambda ev: None  # misbehaviour we proved (v5)
        self._parent_c: Memo[bytes, bytes] = Memo(64)
        self._parent_k: Memo[tuple[bytes, bytes], int] = Memo(64)

    async def parent_commitment(self, parent: bytes) -> bytes:
        """C of a parent block's model (what a free-rider would resubmit); b"" if it
        cannot be computed now. Remembered: members and the aggregator both need it."""

        async def compute() -> bytes:
            job = Commit(self.artifacts, self.arch, self.chain.model_of(parent))
            c: bytes = await self.prover.run(job, timeout=self.timeout_s)
            return c

        try:
            return await self._parent_c.get(parent, compute)
        except (LookupError, WorkerError) as exc:
            log.warning("no commitment of parent %s: %s", short(parent), exc)
            return b""

    async def parent_facts(self, parent: bytes, batch: EvalBatch) -> tuple[bytes, int] | None:
        """What the rule's `select` needs of the parent: its model's C and (v6, a guard)
        its k on the round's batch (else 0); None if they cannot be computed now."""
        parent_c = await self.parent_commitment(parent)
        if not parent_c:
            return None
        if not self.rule.needs_parent_k():
            return parent_c, 0

        async def evaluate() -> int:
            job = Evaluate(self.artifacts, self.arch, self.chain.model_of(parent), batch.encode())
            k: int = await self.prover.run(job, timeout=self.timeout_s)
            return k

        try:
            return parent_c, await self._parent_k.get((parent, batch.hash()), evaluate)
        except (LookupError, WorkerError) as exc:
            log.warning("no k of parent %s: %s", short(parent), exc)
            return None

    async def serve(self, st: RoundState, mine: Mine, opened: int) -> None:
        """Answer selections, reveal and unmask once (consensus.aggpolicy decides each),
        until the round's nursery is cancelled. `opened`: when this node opened the round
        (the proposers' turns count from there)."""
        while True:
            changed = st.changed
            wake: int | None = None
            for h, sel in list(st.agg.selections.items()):
                if h in st.agg.answered or h in st.agg.refused or not self._names_us(sel, mine):
                    continue
                decision = await self._decide(st, h, sel, opened)
                if decision.answer is aggpolicy.Answer.ANSWER:
                    st.agg.answered.add(h)
                    await self._answer(st, h, sel, mine)
                elif decision.answer is aggpolicy.Answer.REFUSE:
                    st.agg.refused.add(h)
                    log.warning(
                        "round %d: not answering selection %s of %s: %s",
                        sel.round,
                        short(h),
                        short(sel.proposer),
                        decision.reason,
                    )
                elif decision.until_ms is not None:
                    wake = decision.until_ms if wake is None else min(wake, decision.until_ms)
            await self._maybe_reveal(st, mine)
            await self._maybe_unmask(st, mine)
            share_wake = await self._maybe_share(st, mine)
            if share_wake is not None:
                wake = share_wake if wake is None else min(wake, share_wake)
            if wake is None:
                await changed.wait()
            else:
                with trio.move_on_after(max(0.0, (wake - self.clock()) / 1000)):
                    await changed.wait()

    def _names_us(self, sel: Selection, mine: Mine) -> bool:
        return (
            self.key.public in sel.members
            and sel.parent == mine.commit.parent
            and mine.commit.hash() in sel.proofs
        )

    async def _decide(
        self, st: RoundState, h: bytes, sel: Selection, opened: int
    ) -> aggpolicy.AnswerDecision:
        """What the policy says of a selection, from what this node holds of its round."""
        assert st.reveal is not None  # a selection names our proof: it was revealed
        on_parent = {
            c: p
            for c, p in st.proofs.items()
            if c in st.commits and st.commits[c].parent == sel.parent
        }
        listed = [on_parent[c] for c in sel.proofs if c in on_parent]
        if len({p.participant for p in listed}) != len(listed):
            # one mask key per member: evidence quoting a member's commit rests on it
            return aggpolicy.AnswerDecision(aggpolicy.Answer.REFUSE, "two commits of one member")
        rank = rule_members = None
        if len(listed) == len(sel.proofs):
            ranking = rules.rank_proofs(st.reveal.batch, listed)
            rank = next((r.rank for r in ranking if r.participant == sel.proposer), None)
            facts = await self.parent_facts(sel.parent, st.reveal.batch)
            if facts is None:  # its model is not here (yet): the rule cannot be applied
                return aggpolicy.AnswerDecision(aggpolicy.Answer.WAIT, "no parent commitment")
            out = self.chain.excluded(sel.parent, sel.round)
            chosen = self.rule.select(st.reveal.batch, listed, facts[0], out, facts[1])
            rule_members = tuple(sorted(c.participant for c in chosen))
        view = aggpolicy.SelectionView(
            sel, st.agg.received_ms.get(h, self.clock()), rank, rule_members or ()
        )
        g = self.genesis
        turns = [opened] + [
            schedule.proposal_time(g, opened, i) for i in range(2, g.timing.max_rank + 1)
        ]
        commit_of = {p.participant: c for c, p in on_parent.items()}
        return aggpolicy.answer_decision(
            self.key.public,
            view,
            {c: st.verified_ms.get(c, 0) for c in on_parent},
            aggpolicy.droppable_proofs(sel, list(st.agg.selections.values()), commit_of),
            turns,
            self.clock(),
            g.timing.fallback_ms // 2,
            st.agg.distrusted(self.key.public),
        )

    async def _answer(self, st: RoundState, h: bytes, sel: Selection, mine: Mine) -> None:
        """Our masked vector for a selection the policy says to answer (alone, y_i is
        uniformly random)."""
        me = self.key.public
        others = secagg.others_of(sel.members, me)
        keys = st.mask_keys(sel.proofs)
        job = MaskVector(
            self.artifacts,
            self.arch,
            mine.weights,
            1,
            self.behaviour.mask_secret(mine.mask_secret),
            me,
            tuple((m, keys[m]) for m in others),
            h,
            secagg.threshold(self.genesis.rule.min_members, len(sel.members)),
        )
        try:
            unsigned = await self.prover.run(job, timeout=self.timeout_s)
        except WorkerError as exc:
            log.warning("round %d: masking for selection %s failed: %s", sel.round, short(h), exc)
            return
        header, rest = secagg.split_update(unsigned)  # v7: a large vector goes in parts
        upd = sign(header, self.key, self.chain_id)
        parts = secagg.vector_parts(upd, rest)
        st.agg.add_update(upd)
        for part in parts:
            st.agg.add_part(part)
        st.touch()
        await self.publish(upd)
        for part in parts:
            await self.publish(part)
        log.info(
            "round %d: sent our masked vector to selection %s (%d messages)",
            sel.round,
            short(h),
            1 + len(parts),
        )

    async def _maybe_reveal(self, st: RoundState, mine: Mine) -> None:
        """Show our shared point with each partner a Dispute names us with whose own
        update disagrees with ours on our pair (consensus.aggpolicy.partners_to_reveal):
        the point is one that partner, proven to have lied, knows already, and we never
        unmask a selection with it afterwards."""
        me = self.key.public
        for h, dispute in list(st.agg.disputes.items()):
            sel = st.agg.selections.get(h)
            if sel is None or h not in st.agg.answered:
                continue
            keys = st.mask_keys(sel.proofs)
            partners = aggpolicy.partners_to_reveal(
                me,
                sel,
                dispute,
                st.agg.updates.get(h, {}),
                st.agg.unmasked is not None,
                st.agg.distrusted(me, within=h),
            )
            for partner in partners:
                if not keys.get(partner):
                    continue
                unsigned = secagg.reveal_pair(mine.mask_secret, me, partner, keys[partner], h)
                reveal = sign(unsigned, self.key, self.chain_id)
                st.agg.add_reveal(reveal)
                st.touch()
                await self.publish(reveal)
                log.info(
                    "round %d: revealed our shared mask point with %s for disputed selection %s",
                    sel.round,
                    short(partner),
                    short(h),
                )

    async def _maybe_unmask(self, st: RoundState, mine: Mine) -> None:
        me = self.key.public
        completes = [
            (st.agg.selections[h], comp)
            for h, comp in st.agg.completes.items()
            if h in st.agg.selections and h in st.agg.answered
        ]
        ours = {h: u[me].hash() for h, u in st.agg.updates.items() if me in u}
        h = aggpolicy.unmask_choice(
            me,
            completes,
            ours,
            set(st.agg.disputes),
            {s for s, r in st.agg.reveals.items() if r},
            st.agg.distrusted(me),
            st.agg.unmasked,
            st.agg.recovering(me),
        )
        if h is None:
            return
        st.agg.unmasked = h  # never a second one this round
        secret = self.behaviour.mask_secret(mine.mask_secret)
        seed = masking.self_seed(secret.to_bytes(32, "big"), h)
        um = sign(Unmask(h, me, seed), self.key, self.chain_id)
        st.agg.add_unmask(um)
        st.touch()
        await self.publish(um)
        log.info("round %d: unmasked for selection %s", st.agg.selections[h].round, short(h))

    async def _maybe_share(self, st: RoundState, mine: Mine) -> int | None:
        """Dropout recovery (version 5): reveal our share of the self seed of each member
        of the selection we unmasked that has not unmasked it after a grace
        (consensus.aggpolicy.shares_to_reveal), so the survivors' sum is finished without
        it. Returns when to look again, if the grace is still running."""
        h = st.agg.unmasked
        if h is None or h not in st.agg.completes or h not in st.agg.selections:
            return None
        me = self.key.public
        sel, comp = st.agg.selections[h], st.agg.completes[h]
        updates = st.agg.updates.get(h, {})
        elsewhere = {m for s, ums in st.agg.unmasks.items() if s != h for m in ums}
        shared = {o for o, by in st.agg.shares.get(h, {}).items() if me in by}
        shared |= {o for s, o in st.agg.wrong_dealers if s == h}
        decision = aggpolicy.shares_to_reveal(
            me,
            sel,
            comp,
            updates,
            set(st.agg.unmasks.get(h, {})),
            elsewhere,
            h,
            h in st.agg.disputes,
            shared,
            st.agg.complete_ms.get(h, self.clock()),
            self.clock(),
            self.genesis.timing.fallback_ms // 2,
        )
        keys = st.mask_keys(sel.proofs)
        secret = self.behaviour.mask_secret(mine.mask_secret)
        for owner in decision.owners:
            upd = updates[owner]
            sealed = upd.seed_shares[secagg.others_of(sel.members, owner).index(me)]
            value = secagg.open_share(secret, me, owner, keys[owner], h, sealed)
            if not secagg.share_holds(upd, sel.members, me, value):
                st.agg.wrong_dealers.add((h, owner))
                log.warning(
                    "round %d: %s dealt us a share of its seed that does not open its commitments",
                    sel.round,
                    short(owner),
                )
                continue
            share = sign(
                SeedShare(h, me, owner, upd.hash(), value.to_bytes(32, "big")),
                self.key,
                self.chain_id,
            )
            st.agg.add_share(share)
            st.touch()
            await self.publish(share)
            log.info(
                "round %d: revealed our share of %s's seed for selection %s (it did not unmask)",
                sel.round,
                short(owner),
                short(h),
            )
        return decision.until_ms
