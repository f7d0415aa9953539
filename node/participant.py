"""The participant's round: train from the head's model, commit, prove once revealed, propose.

What to propose and when is consensus.policy's: this module runs the prover jobs
against the round clock and acts on the policy's decisions. The trained weights
never leave the node except as the global model of a block this node proposes.
(A little over 300 lines: one round's steps, in the order they run, read best in one
place; the aggregation itself is node.aggregator's and node.aggmember's.)
"""

from __future__ import annotations

import dataclasses
import logging
import os

import trio

from consensus import aggpolicy, policy, rules, schedule, secagg
from consensus.crypto import sha256, short
from consensus.errors import ForkChoiceError
from consensus.forkchoice import ChainNode
from consensus.rules import sign
from consensus.strategy import rests_on_enough
from consensus.types import Block, CommitTx, ProofTx
from node.aggregator import Aggregation, Outcome, keep_parent
from node.context import NodeContext, Role
from node.evidencepool import EvidencePool
from node.importer import BlockImporter
from node.interfaces import sleep_until
from node.membershippool import MembershipPool
from node.roundlog import ProofSeen
from node.roundpool import Mine, RoundPool, RoundState
from prover.client import Commit, Prove, Train
from prover.train import fresh_seed
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")


class Participant(Role):
    def __init__(
        self,
        ctx: NodeContext,
        *,
        pool: RoundPool,
        importer: BlockImporter,
        data_file: str,
        prove_timeout_s: float,
        aggregation: Aggregation | None = None,
        membership: MembershipPool | None = None,
        evidence: EvidencePool | None = None,
    ) -> None:
        super().__init__(ctx)
        self.pool = pool
        self.importer = importer
        self.data_file = data_file
        self.prove_timeout_s = prove_timeout_s
        self.aggregation = aggregation  # None: the chain's rule publishes the winner's model
        self.membership = membership  # pending changes of the participant set our blocks carry
        self.evidence = evidence  # proven misbehaviour our blocks carry (v5)

    def _budget_s(self, deadline_ms: int) -> float:
        return max(0.0, (deadline_ms - self.clock()) / 1000)

    async def play(self, rnd: int, opened: int) -> None:
        """Round `rnd`, which this node opened at `opened` (deadlines count from there);
        only if our key is a participant of that round on our head (consensus.membership)."""
        if self.key.public not in (self.chain.participants(self.chain.head, rnd) or ()):
            return
        mine = await self._train_and_commit(rnd, opened)
        if mine is None:
            return
        st = self.pool.state(rnd)
        rec = self.pool.roundlog.record(rnd)
        # The proof deadline is when others stop waiting for ours, not when it stops being
        # useful: while the round lasts, a late proof can still make (or beat) its block.
        end = schedule.round_end(self.genesis, opened)
        with trio.move_on_after(self._budget_s(end)):
            await st.revealed.wait()
        if st.reveal is None:
            rec.notes.append("no reveal while the round lasted")
            return
        if mine.commit.hash() not in st.reveal.sealed:
            rec.notes.append("our commit was not sealed by the publisher")
            log.warning("round %d: our commit was not sealed", rnd)
            return
        if not await self._prove(rnd, opened, st, mine):
            return
        if self.aggregation is None:
            await self._propose_when_due(rnd, opened, st, mine)
            return
        async with trio.open_nursery() as nursery:  # the round's end cancels the member
            nursery.start_soon(self.aggregation.serve, st, mine, opened)
            await self._propose_when_due(rnd, opened, st, mine)
            await trio.sleep_forever()

    async def _train_and_commit(self, rnd: int, opened: int) -> Mine | None:
        g = self.genesis
        rec = self.pool.roundlog.record(rnd)
        parent = self.chain.head
        try:
            global_model = self.chain.model_of(parent)
        except LookupError as exc:
            rec.notes.append(f"no global model to train from: {exc}")
            log.error("round %d: cannot train: %s", rnd, exc)
            return None
        t = g.task
        train = Train(
            t.architecture,
            global_model,
            self.data_file,
            t.local_epochs,
            t.train_batch_size,
            t.learning_rate_ppm,
            fresh_seed(),
        )
        try:
            with trio.fail_after(self._budget_s(schedule.commit_deadline(g, opened))):
                weights = await self.prover.run(train, timeout=self.prove_timeout_s)
                if self.behaviour.free_ride:
                    weights = global_model
                self.pool.mark(rnd, "trained")
                commit_job = Commit(self.artifacts, t.architecture, weights)
                c = await self.prover.run(commit_job, timeout=self.prove_timeout_s)
        except trio.TooSlowError:
            rec.notes.append("missed the commit deadline: skipping this round")
            log.warning("round %d: training and commitment missed the deadline; skipping", rnd)
            return None
        except WorkerError as exc:
            rec.notes.append(f"training failed: {exc}")
            log.error("round %d: training failed: %s", rnd, exc)
            return None
        binding = rules.commit_binding(self.chain_id, self.key.public, rnd, parent, c)
        secret = secagg.mask_secret(os.urandom(32)) if self.rule.aggregates else 0
        mask_key = secagg.mask_public(secret) if secret else b""
        unsigned = CommitTx(rnd, parent, self.key.public, binding, mask_key=mask_key)
        commit = sign(unsigned, self.key, self.chain_id)
        mine = Mine(weights, commit, c, secret)
        keep_dir = self.behaviour.keep_weights
        if keep_dir is not None:
            await trio.Path(keep_dir).mkdir(parents=True, exist_ok=True)
            await trio.Path(keep_dir / f"round-{rnd}.bin").write_bytes(weights)
        self.pool.state(rnd).mine = mine
        self.pool.record_commit(rnd, commit)
        self.pool.mark(rnd, "committed")
        await self.publish(commit)
        log.info(
            "round %d: committed %s on parent %s", rnd, short(commit.hash(), 12), short(parent, 12)
        )
        return mine

    async def _prove(self, rnd: int, opened: int, st: RoundState, mine: Mine) -> bool:
        assert st.reveal is not None
        job = Prove(
            self.artifacts, self.genesis.task.architecture, mine.weights, st.reveal.batch.encode()
        )
        try:
            with trio.fail_after(self._budget_s(schedule.round_end(self.genesis, opened))):
                proved = await self.prover.run(job, timeout=self.prove_timeout_s)
        except (trio.TooSlowError, WorkerError) as exc:
            self.pool.roundlog.record(rnd).notes.append(f"proving failed or was late: {exc!r}")
            log.warning("round %d: proving failed or missed the deadline: %r", rnd, exc)
            return False
        except trio.Cancelled:
            self.pool.roundlog.record(rnd).notes.append("the round ended before our proof")
            log.warning("round %d: proving failed or missed the deadline: the round ended", rnd)
            raise
        commit_id = mine.commit.hash()
        tx = ProofTx(rnd, commit_id, self.key.public, mine.commitment, proved.k, proved.proof)
        tx = sign(tx, self.key, self.chain_id)
        self.pool.mark(rnd, "proved")
        st.add_proof(tx, self.clock())
        self.pool.roundlog.record(rnd).proofs[commit_id] = ProofSeen(
            self.key.public, commit_id, proved.k, True
        )
        await self.publish(tx)
        log.info("round %d: proved k=%d", rnd, proved.k)
        return True

    def _candidate(
        self, st: RoundState, mine: Mine, ranking: list[rules.Ranked], outcome: Outcome
    ) -> Block | None:
        """Our block for this ranking and global model, signed, or None if we cannot build one."""
        me = self.key.public
        pinfo = self.chain.parent_info(mine.commit.parent)
        if st.reveal is None or pinfo is None:
            return None
        if outcome.proofs is not None:  # exactly the proofs the aggregate rests on
            kept = [st.proofs[c] for c in outcome.proofs]
            ranking = rules.rank_proofs(st.reveal.batch, kept)
        if not any(r.participant == me for r in ranking):
            return None
        block = policy.build_block(
            pinfo, me, st.reveal, ranking, st.commits, st.proofs, sha256(outcome.model)
        )
        changes = (
            () if self.membership is None else self.membership.for_block(pinfo.hash, block.round)
        )
        proven = () if self.evidence is None else self.evidence.for_block(pinfo.hash, block.round)
        full: Block = dataclasses.replace(
            block,
            members=outcome.members,
            remainder=outcome.remainder,
            membership=changes,
            evidence=proven,
            aggregate_hash=sha256(outcome.aggregate) if outcome.aggregate else b"",
            velocity_hash=sha256(outcome.velocity) if outcome.velocity else b"",
        )
        return sign(full, self.key, self.chain_id)

    def _blocking_sibling(self, st: RoundState, parent: bytes) -> ChainNode | None:
        return policy.blocking_sibling(
            st.blocks.get(parent), self.chain.node(parent), self.aggregation is not None
        )

    async def _enough_proofs(self, st: RoundState, parent: bytes, opened: int) -> int:
        """When the proofs we hold first could make an aggregate (at least min_members of
        them, resting on half the sealed commits): now if they can, else once they can,
        or when too little of the round is left to wait longer (two fallback delays for
        the aggregation itself). Under a busy CPU proofs finish after the proof deadline;
        a proposer that went then would hold only its own and make no aggregate."""
        reveal = st.reveal
        assert reveal is not None
        g = self.genesis

        def enough() -> bool:
            held = len(policy.ranking_for(reveal, st.commits, st.proofs, parent))
            return held >= g.rule.min_members and rests_on_enough(held, len(reveal.sealed))

        last = schedule.round_end(g, opened) - 2 * g.timing.fallback_ms
        await st.wait_until(enough, last, self.clock)
        return self.clock()

    async def _propose_when_due(self, rnd: int, opened: int, st: RoundState, mine: Mine) -> None:
        g = self.genesis
        parent = mine.commit.parent
        reveal = st.reveal
        assert reveal is not None
        enough_at = schedule.proof_deadline(g, opened)
        if self.aggregation is not None:
            enough_at = await self._enough_proofs(st, parent, opened)
        for rank in range(1, g.timing.max_rank + 1):
            due = aggpolicy.proposal_due(
                schedule.proposal_time(g, opened, rank), enough_at, rank, g.timing.fallback_ms
            )
            if rank == 1:  # rank 1 goes as soon as every sealed proof is verified
                await st.wait_until(
                    lambda: policy.proofs_complete(reveal, st.proofs), due, self.clock
                )
            else:
                await sleep_until(self.clock, due)
            ranking = policy.ranking_for(reveal, st.commits, st.proofs, parent)
            self.pool.roundlog.record(rnd).ranking = [(r.rank, r.participant, r.k) for r in ranking]
            block, candidate = None, None
            if self.aggregation is None:  # winner: our block is cheap to build and score
                block = self._candidate(st, mine, ranking, Outcome(mine.weights, (), b""))
                if block is not None:
                    k = next(r.k for r in ranking if r.participant == self.key.public)
                    candidate = self._preview(block, k)
            decision = policy.proposal_decision(
                self.key.public,
                ranking,
                rank,
                g.timing.max_rank,
                candidate,
                self._blocking_sibling(st, parent),
                built_late=self.aggregation is not None,
            )
            if decision is policy.Decision.ABSTAIN:
                return
            if decision is not policy.Decision.PROPOSE:
                continue
            if self.aggregation is None:
                if block is not None:
                    await self._propose(rnd, block, (mine.weights,))
                return
            await self._aggregate_and_propose(rnd, opened, st, mine, ranking)
            return

    def _preview(self, block: Block, k: int) -> ChainNode | None:
        """Fork choice's node for our block, were it applied (None: it cannot be)."""
        try:
            return self.chain.forks.preview(sha256(block.encode()), block.parent, k)[0]
        except ForkChoiceError:
            return None

    async def _aggregate_and_propose(
        self, rnd: int, opened: int, st: RoundState, mine: Mine, ranking: list[rules.Ranked]
    ) -> None:
        assert self.aggregation is not None
        end = schedule.round_end(self.genesis, opened)
        outcome = await self.aggregation.aggregate(st, mine, end)
        block = self._candidate(st, mine, ranking, outcome)
        if block is None or self._blocking_sibling(st, mine.commit.parent) is not None:
            return  # someone's aggregate for this parent came first
        if await self._propose(rnd, block, outcome.blobs()) or not outcome.members:
            return
        log.warning("round %d: our aggregate did not check: proposing the parent's model", rnd)
        keep = keep_parent(self.chain, mine.commit.parent)
        block = self._candidate(st, mine, ranking, keep)
        if block is not None:
            await self._propose(rnd, block, keep.blobs())

    async def _propose(self, rnd: int, block: Block, blobs: tuple[bytes, ...]) -> bool:
        applied = await self.importer.import_own(block, blobs)
        if applied is None:
            return False
        self.pool.mark(rnd, "proposed")
        self.pool.mark(rnd, "block")
        log.info(
            "round %d: proposed block %s at height %d (rank %d)",
            rnd,
            short(applied.block_hash, 12),
            applied.height,
            block.rank,
        )
        await self.publish(block)
        return True
