"""The task publisher's round: reveal the batch and seal the commits once all are in.

The reveal goes out as soon as every participant's commit has arrived, or at the
commit deadline (an upper bound, not a schedule); which commits are sealed is
consensus.policy.seal over the arrival times this node recorded. The batch is
proven against the genesis Merkle root.
"""

from __future__ import annotations

import logging

from consensus import policy, schedule
from consensus.merkle import merkle_proof
from consensus.rules import sign
from consensus.types import EvalBatch, Reveal
from node.context import NodeContext, Role
from node.roundpool import RoundPool

log = logging.getLogger("zkpot.node")


class Publisher(Role):
    def __init__(self, ctx: NodeContext, *, pool: RoundPool, batches: list[EvalBatch]) -> None:
        if not batches:
            raise ValueError("the publisher needs the held-out batches")
        super().__init__(ctx)
        self.pool = pool
        self.batches = batches
        self.leaves = [b.hash() for b in batches]

    def _participants(self, rnd: int) -> frozenset[bytes]:
        """Whom to wait for: the round's participants on top of our head."""
        chain = self.pool.chain
        return chain.participants(chain.head, rnd) or frozenset()

    async def play(self, rnd: int, opened: int) -> None:
        deadline = schedule.commit_deadline(self.genesis, opened)
        st = self.pool.state(rnd)
        await st.wait_until(
            lambda: policy.commits_complete(self._participants(rnd), st.arrivals()),
            deadline,
            self.clock,
        )
        sealed = policy.seal(st.arrivals(), min(deadline, self.clock()))
        reveal = Reveal(rnd, self.batches[rnd], tuple(merkle_proof(self.leaves, rnd)), sealed)
        reveal = sign(reveal, self.key, self.chain_id)
        self.pool.on_reveal(reveal)
        await self.publish(reveal)
        log.info("round %d: revealed batch %d sealing %d commits", rnd, rnd, len(sealed))
