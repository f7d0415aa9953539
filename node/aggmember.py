"""Protocol v2's aggregation round on a participant's node, the member's side
(consensus.secagg says what each message means; node.aggregator is the proposer's side).

A member answers every selection that names it and is the rule's with its masked
vector (alone it reveals nothing), reveals its self-mask seed for the first Complete
of the round only, so no two computable sums differ by one member, and, when a
Dispute names it with a partner, reveals that pair's shared point so whoever committed
a wrong pairwise mask is named alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from consensus import masking, secagg
from consensus.crypto import SigningKey
from consensus.rules import sign
from consensus.secagg import MaskedUpdate, Selection, Unmask
from consensus.strategy import Rule
from consensus.types import Genesis
from node.chain import Chain
from node.interfaces import Clock, Prover, Publish
from node.memo import Memo
from node.roundpool import Mine, RoundState
from prover import faults
from prover.client import Commit, MaskVector
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")


class Member:
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
        self._parent_c: Memo[bytes, bytes] = Memo(64)

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
            log.warning("no commitment of parent %s: %s", parent.hex()[:8], exc)
            return b""

    async def serve(self, st: RoundState, mine: Mine) -> None:
        """Answer selections and unmask once, until the round's nursery is cancelled."""
        while True:
            changed = st.changed
            for h, sel in list(st.agg.selections.items()):
                if h not in st.agg.answered and self._names_us(sel, mine):
                    await self._answer(st, h, sel, mine)
            await self._maybe_reveal(st, mine)
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
        keys = st.mask_keys(sel.proofs)  # every proof is held, so every commit is
        me = self.key.public
        others = secagg.others_of(sel.members, me)
        if any(not keys.get(m) for m in others):
            return  # a member's commit is not here yet: try again when it is
        st.agg.answered.add(h)
        if st.agg.revealed_with & set(others):
            log.warning(
                "round %d: selection %s pairs us with a member whose shared mask point we "
                "revealed this round: not answering",
                sel.round,
                h.hex()[:8],
            )
            return
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
            faults.mask_secret_used(mine.mask_secret),
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

    async def _maybe_reveal(self, st: RoundState, mine: Mine) -> None:
        """Show our shared point with each partner a Dispute names us with, so whoever
        committed the wrong mask is named alone. Safe: the selection is abandoned (we never
        unmask it, nor answer another with that partner this round), so the revealed
        pairwise mask only ever covers a vector whose self mask stays secret."""
        me = self.key.public
        for h, dispute in list(st.agg.disputes.items()):
            sel = st.agg.selections.get(h)
            if sel is None or h not in st.agg.answered or st.agg.unmasked == h:
                continue
            keys = st.mask_keys(sel.proofs)
            for pid in dispute.pairs:
                a, b = secagg.pair_of(pid)
                partner = b if a == me else a if b == me else None
                if partner is None or pid in st.agg.reveals.get(h, {}) or not keys.get(partner):
                    continue
                unsigned = secagg.reveal_pair(mine.mask_secret, me, partner, keys[partner], h)
                reveal = sign(unsigned, self.key, self.cid)
                st.agg.revealed_with.add(partner)
                st.agg.add_reveal(reveal)
                st.touch()
                await self.publish(reveal)
                log.info(
                    "round %d: revealed our shared mask point with %s for disputed selection %s",
                    sel.round,
                    partner.hex()[:8],
                    h.hex()[:8],
                )

    async def _maybe_unmask(self, st: RoundState, mine: Mine) -> None:
        if st.agg.unmasked is not None:
            return
        me = self.key.public
        for h, comp in list(st.agg.completes.items()):
            sel = st.agg.selections.get(h)
            ours = st.agg.updates.get(h, {}).get(me)
            if sel is None or ours is None or h not in st.agg.answered or h in st.agg.disputes:
                continue
            if comp.updates[sel.members.index(me)] != ours.hash():
                continue
            st.agg.unmasked = h  # never a second one this round
            secret = faults.mask_secret_used(mine.mask_secret)
            seed = masking.self_seed(secret.to_bytes(32, "big"), h)
            um = sign(Unmask(h, me, seed, bytes(64)), self.key, self.cid)
            st.agg.add_unmask(um)
            st.touch()
            await self.publish(um)
            log.info("round %d: unmasked for selection %s", sel.round, h.hex()[:8])
            return
