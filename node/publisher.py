"""The task publisher's round: reveal the batch and seal the commits once all are in.

The reveal goes out as soon as every participant's commit has arrived, or at the
commit deadline (an upper bound, not a schedule); which commits are sealed is
consensus.policy.seal over the arrival times this node recorded. The batch is
proven against the genesis Merkle root.
"""

from __future__ import annotations

import logging

from consensus import policy, schedule
from consensus.crypto import SigningKey
from consensus.merkle import merkle_proof
from consensus.rules import sign
from consensus.types import EvalBatch, Genesis, Reveal
from node.interfaces import Clock, Publish
from node.roundpool import RoundPool

log = logging.getLogger("zkpot.node")


class Publisher:
    def __init__(
        self,
        *,
        key: SigningKey,
        genesis: Genesis,
        cid: bytes,
        pool: RoundPool,
        batches: list[EvalBatch],
        publish: Publish,
        clock: Clock,
    ) -> None:
        if not batches:
            raise ValueError("the publisher needs the held-out batches")
        self.key = key
        self.genesis = genesis
        self.cid = cid
        self.pool = pool
        self.batches = batches
        self.leaves = [b.hash() for b in batches]
        self.publish = publish
        self.clock = clock

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
        reveal = sign(reveal, self.key, self.cid)
        self.pool.on_reveal(reveal)
        await self.publish(reveal)
        log.info("round %d: revealed batch %d sealing %d commits", rnd, rnd, len(sealed))
