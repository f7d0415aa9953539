"""Protocol v2's aggregation round on a participant's node: the member's side and the
aggregator's (the proposer's) side (consensus.secagg says what each message means).

A member answers every selection that names it with its masked vector (alone it
reveals nothing) and reveals its self-mask seed for the first Complete only, so no
two computable sums differ by one member. The aggregator selects by the chain's
rule, waits for the vectors until the fallback delay, checks each one against its
member's commitment (a member whose vector does not match is dropped alone), and
starts a new attempt with fresh masks without whoever was silent or wrong. If the
set falls below the rule's minimum, or a member is silent after Complete (its
self-mask stays secret, so nobody can finish that sum), the block keeps the
parent's model. best-share weighs every member 1, so a member's weight is 1.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from consensus import masking, secagg
from consensus.crypto import SigningKey
from consensus.rules import Ranked, sign
from consensus.secagg import Complete, MaskedUpdate, Selection, Unmask
from consensus.strategy import Rule
from consensus.types import Genesis, ProofTx
from node.chain import Chain
from node.interfaces import Clock, Prover, Publish
from node.roundpool import Mine, RoundState
from prover.client import Aggregate, CheckUpdate, Commit, MaskVector
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")


def _holds(table: Mapping[bytes, Mapping[bytes, object]], h: bytes, members: list[bytes]) -> bool:
    """Every member's message for selection `h` is in."""
    return set(members) <= set(table.get(h, {}))


@dataclass(frozen=True)
class Outcome:
    """The global model a block of this round carries: an aggregate, or the parent's."""

    model: bytes
    members: tuple[bytes, ...]
    remainder: bytes
    proofs: frozenset[bytes] | None = None  # the commit ids of the proofs it rests on (None: all)


class Aggregation:
    def __init__(
        self,
        *,
        key: SigningKey,
        genesis: Genesis,
        cid: bytes,
        rule: Rule,
        chain: Chain,
        prover: Prover,
        publish: Publish,
        artifacts: Path,
        timeout_s: float,
        clock: Clock,
    ) -> None:
        self.key = key
        self.genesis = genesis
        self.cid = cid
        self.rule = rule
        self.chain = chain
        self.prover = prover
        self.publish = publish
        self.artifacts = str(artifacts)
        self.arch = genesis.task.architecture
        self.timeout_s = timeout_s
        self.clock = clock
        self._parent_c: dict[bytes, bytes] = {}

    async def parent_commitment(self, parent: bytes) -> bytes:
        """C of a parent block's model (what a free-rider would resubmit); b"" if it
        cannot be computed now. Cached: members and the aggregator both need it."""
        if parent not in self._parent_c:
            try:
                model = self.chain.model_of(parent)
                job = Commit(self.artifacts, self.arch, model)
                self._parent_c[parent] = await self.prover.run(job, timeout=self.timeout_s)
            except (LookupError, WorkerError) as exc:
                log.warning("no commitment of parent %s: %s", parent.hex()[:8], exc)
                return b""
            if len(self._parent_c) > 64:
                self._parent_c.pop(next(iter(self._parent_c)))
        return self._parent_c[parent]

    # ------------------------------------------------------------------ member

    async def serve(self, st: RoundState, mine: Mine) -> None:
        """Answer selections and unmask once, until the round's nursery is cancelled."""
        while True:
            changed = st.changed
            for h, sel in list(st.agg.selections.items()):
                if h not in st.agg.answered and self._names_us(sel, mine):
                    await self._answer(st, h, sel, mine)
            await self._maybe_unmask(st, mine)
            await changed.wait()

    def _names_us(self, sel: Selection, mine: Mine) -> bool:
        return (
            self.key.public in sel.members
            and sel.parent == mine.commit.parent
            and mine.commit.hash() in sel.proofs
        )

    async def _answer(self, st: RoundState, h: bytes, sel: Selection, mine: Mine) -> None:
        """Our masked vector, for a selection that is the rule's: its members are exactly
        whom the rule selects from its proofs, and its proposer is one of them by proof.
        (Anything else could only waste our one unmask of the round on an invalid block.)"""
        proofs = [st.proofs.get(cid) for cid in sel.proofs]
        held = [p for p in proofs if p is not None]
        if len(held) < len(proofs) or st.reveal is None:
            return  # a proof is not verified here yet: try again when it is
        keys = {p.participant: st.commits[p.commit_id].mask_key for p in held}
        me = self.key.public
        others = secagg.others_of(sel.members, me)
        if any(not keys.get(m) for m in others):
            return  # a member's commit is not here yet: try again when it is
        st.agg.answered.add(h)
        parent_c = await self.parent_commitment(sel.parent)
        chosen = self.rule.select(st.reveal.batch, held, parent_c) if parent_c else ()
        if sel.proposer not in keys or tuple(sorted(c.participant for c in chosen)) != sel.members:
            log.warning(
                "round %d: selection %s is not the rule's: not answering", sel.round, h.hex()[:8]
            )
            return
        job = MaskVector(
            self.artifacts,
            self.arch,
            mine.weights,
            1,
            mine.mask_secret,
            me,
            tuple((m, keys[m]) for m in others),
            h,
        )
        try:
            y, pairs, self_c = await self.prover.run(job, timeout=self.timeout_s)
        except WorkerError as exc:
            log.warning(
                "round %d: masking for selection %s failed: %s", sel.round, h.hex()[:8], exc
            )
            return
        upd = sign(MaskedUpdate(h, me, y, pairs, self_c, bytes(64)), self.key, self.cid)
        st.agg.add_update(upd)
        st.touch()
        await self.publish(upd)
        log.info("round %d: sent our masked vector to selection %s", sel.round, h.hex()[:8])

    async def _maybe_unmask(self, st: RoundState, mine: Mine) -> None:
        if st.agg.unmasked is not None:
            return
        me = self.key.public
        for h, comp in list(st.agg.completes.items()):
            sel = st.agg.selections.get(h)
            ours = st.agg.updates.get(h, {}).get(me)
            if sel is None or ours is None or h not in st.agg.answered:
                continue
            if comp.updates[sel.members.index(me)] != ours.hash():
                continue
            st.agg.unmasked = h  # never a second one this round
            seed = masking.self_seed(mine.mask_secret.to_bytes(32, "big"), h)
            um = sign(Unmask(h, me, seed, bytes(64)), self.key, self.cid)
            st.agg.add_unmask(um)
            st.touch()
            await self.publish(um)
            log.info("round %d: unmasked for selection %s", sel.round, h.hex()[:8])
            return

    # ------------------------------------------------------------------ aggregator

    async def aggregate(
        self, st: RoundState, mine: Mine, ranking: Sequence[Ranked], deadline_ms: int
    ) -> Outcome:
        assert st.reveal is not None
        parent = mine.commit.parent
        parent_model = self.chain.model_of(parent)
        keep = Outcome(parent_model, (), b"")
        parent_c = await self.parent_commitment(parent)
        if not parent_c:
            return keep
        proofs = [st.proofs[r.commit_id] for r in ranking]
        commits = {p.participant: st.commits[p.commit_id] for p in proofs}
        excluded = {k for k, c in commits.items() if not c.mask_key}
        wait_ms = self.genesis.timing.fallback_ms
        for attempt in range(secagg.MAX_ATTEMPTS):
            # a silent or wrong member's proof leaves the block: the rule then selects
            # from the others (the next-ranked fresh model takes its place)
            kept = [p for p in proofs if p.participant not in excluded]
            chosen = self.rule.select(st.reveal.batch, kept, parent_c) if kept else ()
            members = sorted(c.participant for c in chosen)
            if len(members) < self.genesis.rule.min_members:
                log.info("round %d: %d members: no aggregate", st.reveal.round, len(members))
                return keep
            by_key = {p.participant: p for p in kept}
            proof_ids = tuple(sorted(p.commit_id for p in kept))
            sel = Selection(
                st.reveal.round,
                parent,
                self.key.public,
                attempt,
                proof_ids,
                tuple(members),
                bytes(64),
            )
            sel = sign(sel, self.key, self.cid)
            h = sel.hash()
            st.agg.add_selection(sel)
            st.touch()
            await self.publish(sel)
            log.info(
                "round %d: selection %s (attempt %d): %d members",
                sel.round,
                h.hex()[:8],
                attempt,
                len(members),
            )
            due = min(self.clock() + wait_ms, deadline_ms)
            await st.wait_until(partial(_holds, st.agg.updates, h, members), due, self.clock)
            got = dict(st.agg.updates.get(h, {}))
            missing = [m for m in members if m not in got]
            wrong = await self._wrong_updates(sel, got, by_key)
            if not missing and not wrong:
                wrong = secagg.pairs_agree(got, sel.members)
            if missing or wrong:
                log.warning(
                    "round %d: selection %s: %d silent, %d wrong; retrying without them",
                    sel.round,
                    h.hex()[:8],
                    len(missing),
                    len(wrong),
                )
                excluded.update(missing, wrong)
                continue
            comp = sign(
                Complete(h, tuple(got[m].hash() for m in members), bytes(64)), self.key, self.cid
            )
            st.agg.add_complete(comp)
            st.touch()
            await self.publish(comp)
            due = min(self.clock() + wait_ms, deadline_ms)
            await st.wait_until(partial(_holds, st.agg.unmasks, h, members), due, self.clock)
            unmasks = st.agg.unmasks.get(h, {})
            if not set(members) <= set(unmasks):
                log.warning("round %d: a member did not unmask: no aggregate this round", sel.round)
                return keep
            job = Aggregate(
                self.artifacts,
                self.arch,
                tuple(members),
                tuple(got[m].vector for m in members),
                tuple(unmasks[m].seed for m in members),
                tuple(got[m].self_commitment for m in members),
                len(members),
            )
            try:
                model, rest = await self.prover.run(job, timeout=self.timeout_s)
            except WorkerError as exc:  # a wrong self seed names its member
                log.warning("round %d: aggregation failed: %s", sel.round, exc)
                return keep
            return Outcome(model, tuple(members), rest, frozenset(proof_ids))
        return keep

    async def _wrong_updates(
        self, sel: Selection, got: dict[bytes, MaskedUpdate], by_key: dict[bytes, ProofTx]
    ) -> list[bytes]:
        """Members whose vector is not their committed model plus their committed masks
        (or could not be checked here in time: either way they cannot be summed now)."""
        wrong: list[bytes] = []

        async def one(member: bytes, upd: MaskedUpdate) -> None:
            others = secagg.others_of(sel.members, member)
            signs = tuple(masking.pair_sign(member, o) for o in others)
            proof = by_key[member]
            job = CheckUpdate(self.artifacts, self.arch, proof.commitment, 1, upd.encode(), signs)
            try:
                ok = await self.prover.run(job, timeout=self.timeout_s)
            except WorkerError:
                ok = False
            if not ok:
                wrong.append(member)

        async with trio.open_nursery() as nursery:
            for member, upd in got.items():
                nursery.start_soon(one, member, upd)
        return wrong
