"""The task publisher's round: at the commit deadline, reveal the batch and seal the commits.

Which commits are sealed is consensus.policy.seal over the arrival times this
node recorded; the batch is proven against the genesis Merkle root.
"""

from __future__ import annotations

import logging

from consensus import policy, schedule
from consensus.crypto import SigningKey
from consensus.merkle import merkle_proof
from consensus.rules import sign
from consensus.types import EvalBatch, Genesis, Reveal
from node.interfaces import Clock, Publish, sleep_until
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

    async def play(self, rnd: int) -> None:
        deadline = schedule.commit_deadline(self.genesis, rnd)
        await sleep_until(self.clock, deadline)
        sealed = policy.seal(self.pool.state(rnd).arrivals(), deadline)
        reveal = Reveal(
            rnd, self.batches[rnd], tuple(merkle_proof(self.leaves, rnd)), sealed, bytes(64)
        )
        reveal = sign(reveal, self.key, self.cid)
        self.pool.on_reveal(reveal)
        await self.publish(reveal)
        log.info("round %d: revealed batch %d sealing %d commits", rnd, rnd, len(sealed))
