"""Protocol v2's aggregation round on a participant's node, the aggregator's (the
proposer's) side (node.aggmember is the member's; consensus.secagg says what each
message means).

The aggregator selects by the chain's rule, waits for the vectors until the fallback
delay, checks each one against its member's commitment (a member whose vector does
not match is dropped alone) and that both members of each pair committed the same
pairwise mask (if not, a Dispute: the pair's revealed shared point names the one that
lied), and starts a new attempt with fresh masks without whoever was silent or wrong.
A member silent after Complete is recovered (version 5): the others reveal their shares
of its self seed and the sum finishes with its vector in it. If the set falls below the
rule's minimum, or fewer than t shares of a silent member's seed come, the block keeps
the parent's model. best-share weighs every member 1, so a member's weight is 1. What
its checks prove wrong it hands on as evidence (consensus.evidence). (A few lines over
300: the attempt loop reads best in one piece.)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import trio

from consensus import aggpolicy, evidence, optimizer, policy, secagg
from consensus.crypto import short
from consensus.rules import sign
from consensus.secagg import Complete, Dispute, MaskedUpdate, Selection
from consensus.strategy import rests_on_enough
from consensus.types import ProofTx
from node.aggmember import Member
from node.chain import Chain
from node.roundpool import Mine, RoundState
from prover.client import Aggregate, CheckUpdate, MaskCommitment, StepModel
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")


def _holds(table: Mapping[bytes, Mapping[bytes, object]], h: bytes, members: list[bytes]) -> bool:
    """Every member's message for selection `h` is in."""
    return set(members) <= set(table.get(h, {}))


def _all_whole(st: RoundState, h: bytes, members: list[bytes]) -> bool:
    """Every member's update for selection `h` is in, with all its parts (v7)."""
    return set(members) <= set(st.agg.whole(h))


@dataclass(frozen=True)
class Outcome:
    """The global model a block of this round carries: an aggregate, or the parent's."""

    model: bytes
    members: tuple[bytes, ...]
    remainder: bytes
    proofs: frozenset[bytes] | None = None  # the commit ids of the proofs it rests on (None: all)
    aggregate: bytes = b""  # v6, a server optimizer: the blob of the aggregate M
    velocity: bytes = b""  # ... and of the velocity after the step (b"": zero)

    def blobs(self) -> tuple[bytes, ...]:
        """The blobs its block names (consensus.blocks.block_blobs)."""
        return tuple(b for b in (self.model, self.aggregate, self.velocity) if b)


def keep_parent(chain: Chain, parent: bytes) -> Outcome:
    """No aggregate: the parent's model and velocity stay (LookupError if not stored)."""
    return Outcome(chain.model_of(parent), (), b"", velocity=chain.velocity_of(parent))


class Aggregation(Member):
    """The proposer's side; it is a member too."""

    async def aggregate(self, st: RoundState, mine: Mine, deadline_ms: int) -> Outcome:
        assert st.reveal is not None
        parent = mine.commit.parent
        keep = keep_parent(self.chain, parent)
        facts = await self.parent_facts(parent, st.reveal.batch)
        if facts is None:
            return keep
        excluded: set[bytes] = set()
        wait_ms = self.genesis.timing.fallback_ms
        for attempt in range(secagg.MAX_ATTEMPTS):
            # a silent or wrong member's proof leaves the block: the rule then selects
            # from the others (the next-ranked fresh model takes its place); proofs that
            # arrived since the last attempt join (members refuse a list that omits any)
            if self.key.public in excluded:  # our own proof must stay in our block
                log.warning("round %d: we were dropped from our own selection", st.reveal.round)
                return keep
            held = policy.ranking_for(st.reveal, st.commits, st.proofs, parent)
            kept = [st.proofs[r.commit_id] for r in held if r.participant not in excluded]
            if not rests_on_enough(len(kept), len(st.reveal.sealed)):
                log.info(
                    "round %d: %d proofs of %d sealed commits: no aggregate",
                    st.reveal.round,
                    len(kept),
                    len(st.reveal.sealed),
                )
                return keep
            out = self.chain.excluded(parent, st.reveal.round)
            chosen = (
                self.rule.select(st.reveal.batch, kept, facts[0], out, facts[1]) if kept else ()
            )
            members = sorted(c.participant for c in chosen)
            if len(members) < self.genesis.rule.min_members:
                log.info("round %d: %d members: no aggregate", st.reveal.round, len(members))
                return keep
            by_key = {p.participant: p for p in kept}
            proof_ids = tuple(sorted(p.commit_id for p in kept))
            sel = sign(
                Selection(
                    st.reveal.round, parent, self.key.public, attempt, proof_ids, tuple(members)
                ),
                self.key,
                self.chain_id,
            )
            h = sel.hash()
            st.agg.add_selection(sel, self.clock())
            st.touch()
            await self.publish(sel)
            log.info(
                "round %d: selection %s (attempt %d): %d members",
                sel.round,
                short(h),
                attempt,
                len(members),
            )
            due = min(self.clock() + wait_ms, deadline_ms)
            await st.wait_until(partial(_all_whole, st, h, members), due, self.clock)
            whole = st.agg.whole(h)  # v7: an update counts once its every part is here
            got = {m: upd for m, (upd, _) in whole.items()}
            missing = [m for m in members if m not in got]
            wrong = await self._wrong_updates(st, sel, whole, by_key)
            disputed = [] if missing or wrong else secagg.disputed_pairs(got, sel.members)
            if disputed:
                due = min(self.clock() + wait_ms, deadline_ms)
                wrong = await self._settle(st, sel, got, disputed, due)
            if missing or wrong:
                log.warning(
                    "round %d: selection %s: %d silent, %d wrong; retrying without them",
                    sel.round,
                    short(h),
                    len(missing),
                    len(wrong),
                )
                excluded.update(missing, wrong)
                continue
            comp = sign(Complete(h, tuple(got[m].hash() for m in members)), self.key, self.chain_id)
            st.agg.add_complete(comp, self.clock())
            st.touch()
            await self.publish(comp)
            due = min(self.clock() + wait_ms, deadline_ms)
            await st.wait_until(partial(_holds, st.agg.unmasks, h, members), due, self.clock)
            seeds = await self._seeds(st, sel, members, deadline_ms)
            if seeds is None:
                return keep
            job = Aggregate(
                self.artifacts,
                self.arch,
                tuple(members),
                tuple(secagg.whole_vector(*whole[m]) for m in members),
                tuple(seeds[m] for m in members),
                tuple(got[m].self_commitment for m in members),
                len(members),
            )
            try:
                mean, rest = await self.prover.run(job, timeout=self.timeout_s)
            except WorkerError as exc:  # a wrong self seed names its member
                log.warning("round %d: aggregation failed: %s", sel.round, exc)
                await self._name_self_masks(sel, got, seeds)
                return keep
            done = Outcome(mean, tuple(members), rest, frozenset(proof_ids))
            return await self._server_step(sel.round, keep, done)
        return keep

    async def _server_step(self, rnd: int, keep: Outcome, done: Outcome) -> Outcome:
        """v6: the next global model is the server optimizer's step with the aggregate."""
        momentum = optimizer.server_of(self.genesis.rule)
        if momentum is None:
            return done
        job = StepModel(self.artifacts, self.arch, keep.model, keep.velocity, done.model, momentum)
        try:
            model, velocity = await self.prover.run(job, timeout=self.timeout_s)
        except WorkerError as exc:
            log.warning("round %d: the server step failed: %s", rnd, exc)
            return keep
        return dataclasses.replace(done, model=model, aggregate=done.model, velocity=velocity)

    async def _seeds(
        self, st: RoundState, sel: Selection, members: list[bytes], deadline_ms: int
    ) -> dict[bytes, bytes] | None:
        """Every member's self seed for a completed selection: its Unmask, or (version 5,
        dropout recovery) `threshold` verified shares of it from the others. None if a
        seed is still missing two fallback delays after Complete."""
        h = sel.hash()
        wait_ms = self.genesis.timing.fallback_ms
        t = secagg.threshold(self.genesis.rule.min_members, len(sel.members))

        def seeds() -> dict[bytes, bytes]:
            out = {m: u.seed for m, u in st.agg.unmasks.get(h, {}).items()}
            for owner, by in st.agg.shares.get(h, {}).items():
                if owner not in out and len(by) >= t:
                    points = {
                        secagg.share_x(sel.members, m): int.from_bytes(s.share, "big")
                        for m, s in by.items()
                    }
                    out[owner] = secagg.recover_seed(points)
            return out

        def complete() -> bool:
            return set(members) <= set(seeds())

        # shares of a silent member's seed come fallback/2 after Complete (the members'
        # grace), so the wait ends as soon as every seed is here either way
        due = min(self.clock() + 2 * wait_ms, deadline_ms)
        await st.wait_until(complete, due, self.clock)
        got = seeds()
        if not set(members) <= set(got):
            log.warning("round %d: a member's seed is missing: no aggregate this round", sel.round)
            return None
        recovered = [m for m in members if m not in st.agg.unmasks.get(h, {})]
        if recovered:
            log.warning(
                "round %d: selection %s: %d did not unmask: their seeds recovered from shares",
                sel.round,
                short(h),
                len(recovered),
            )
        return {m: got[m] for m in members}

    async def _name_self_masks(
        self, sel: Selection, got: dict[bytes, MaskedUpdate], seeds: dict[bytes, bytes]
    ) -> None:
        """Evidence against each member whose public seed (unmasked, or recovered from
        shares that open its sharing) does not open its self-mask commitment: it cost the
        round its sum (no second sum may be opened), so it is excluded for a while."""

        async def one(member: bytes) -> None:
            job = MaskCommitment(self.artifacts, self.arch, seeds[member])
            try:
                opened = await self.prover.run(job, timeout=self.timeout_s)
            except WorkerError:
                return
            if opened != got[member].self_commitment:
                self.found(evidence.bad_self_mask(sel, got[member], seeds[member]))

        async with trio.open_nursery() as nursery:
            for member in sel.members:
                nursery.start_soon(one, member)

    async def _settle(
        self,
        st: RoundState,
        sel: Selection,
        got: dict[bytes, MaskedUpdate],
        pairs: list[bytes],
        due_ms: int,
    ) -> list[bytes]:
        """Abandon the selection with a Dispute and name, for each disputed pair, the
        member whose commitment is not the pair's true mask (from a revealed shared
        point); a pair that nobody settles in time loses both its members."""
        h = sel.hash()
        dispute = sign(Dispute(h, tuple(pairs)), self.key, self.chain_id)
        st.agg.add_dispute(dispute)
        st.touch()
        await self.publish(dispute)
        log.warning(
            "round %d: selection %s: %d pairs disagree on their shared mask: disputed",
            sel.round,
            short(h),
            len(pairs),
        )

        def settled() -> bool:
            return set(pairs) <= set(st.agg.reveals.get(h, {}))

        await st.wait_until(settled, due_ms, self.clock)
        true: dict[bytes, bytes] = {}
        for pid, reveal in st.agg.reveals.get(h, {}).items():
            job = MaskCommitment(self.artifacts, self.arch, secagg.true_pair_seed(reveal))
            try:
                true[pid] = await self.prover.run(job, timeout=self.timeout_s)
            except WorkerError:
                continue  # unsettled: the pair loses both
        wrong = aggpolicy.named_by_reveals(sel, got, pairs, true)
        liars = set(aggpolicy.named_by_reveals(sel, got, [p for p in pairs if p in true], true))
        self._name_false_pairs(st, sel, got, true)
        for who in wrong:
            log.warning(
                "round %d: selection %s: %s %s",
                sel.round,
                short(h),
                short(who),
                "committed a wrong mask for its pair" if who in liars else "left a pair unsettled",
            )
        return wrong

    def _name_false_pairs(
        self,
        st: RoundState,
        sel: Selection,
        got: dict[bytes, MaskedUpdate],
        true: dict[bytes, bytes],
    ) -> None:
        """Evidence against each member whose commitment for a revealed pair is not the
        pair's true mask (`true`: pair id -> L(u)), quoting that pair's reveal."""
        h = sel.hash()
        commits = {c.participant: c for c in map(st.commits.get, sel.proofs) if c is not None}
        for pid in true:
            a, b = secagg.pair_of(pid)
            if a not in commits or b not in commits:
                continue
            for who in aggpolicy.named_by_reveals(sel, got, [pid], true):
                reveal = st.agg.reveals[h][pid]
                self.found(evidence.false_pair(sel, got[who], reveal, [commits[a], commits[b]]))

    async def _wrong_updates(
        self,
        st: RoundState,
        sel: Selection,
        whole: dict[bytes, tuple[MaskedUpdate, tuple[bytes, ...]]],
        by_key: dict[bytes, ProofTx],
    ) -> list[bytes]:
        """Members whose vector is not their committed model plus their committed masks
        (or could not be checked here in time: either way they cannot be summed now);
        a vector proven wrong is evidence against its member."""
        wrong: list[bytes] = []

        async def one(member: bytes, upd: MaskedUpdate, rest: tuple[bytes, ...]) -> None:
            signs = secagg.pair_signs(sel.members, member)
            proof = by_key[member]
            job = CheckUpdate(
                self.artifacts, self.arch, proof.commitment, 1, upd.encode(), signs, rest
            )
            try:
                ok = await self.prover.run(job, timeout=self.timeout_s)
            except WorkerError:
                wrong.append(member)
                return
            if not ok:
                wrong.append(member)
                commit = st.commits.get(proof.commit_id)
                if commit is not None:
                    self.found(evidence.bad_update(sel, commit, proof.commitment, upd, rest))

        async with trio.open_nursery() as nursery:
            for member, (upd, rest) in whole.items():
                nursery.start_soon(one, member, upd, rest)
        return wrong
