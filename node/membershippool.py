"""Pending changes of the participant set: join requests waiting for the publisher, and
signed changes (consensus.membership) waiting for a block to carry them.

Both arrive by gossip on the round topic or from this node's API (`POST /membership`,
the same checks), and both are bounded: one request per key (a key's requests are the
same bytes: ed25519 signatures are deterministic), at most MAX_REQUESTS keys, the
oldest dropped first; changes at most MAX_PENDING. Keys are free, so each gossip peer
may bring at most REQUESTS_PER_PEER new keys per round: a flood of fresh keys stops at
the flooder's own peers and cannot push real requests out of the pool. A change is kept only while it can still
be carried: valid on the head's roster for a block of the current round or later.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable

from consensus import membership, rules
from consensus.crypto import short
from consensus.errors import InvalidError
from consensus.types import JoinRequest, Membership
from node.chain import Chain
from p2p import Verdict

log = logging.getLogger("zkpot.node")

MAX_REQUESTS = 256
MAX_PENDING = 64
REQUESTS_PER_PEER = 4  # new join-request keys one forwarding peer may bring per round


class MembershipPool:
    def __init__(self, chain: Chain, current_round: Callable[[], int]) -> None:
        self.genesis = chain.genesis
        self.chain_id = chain.chain_id
        self.chain = chain
        self.current_round = current_round
        self.requests: OrderedDict[bytes, JoinRequest] = OrderedDict()  # by key
        self.pending: dict[bytes, Membership] = {}  # by hash
        self._brought: Counter[str] = Counter()  # new keys per forwarding peer, this round
        self._brought_round = -1

    def on_request(self, req: JoinRequest, forwarder: str | None = None) -> Verdict:
        """`forwarder`: the gossip peer that brought it (None: this node's own API)."""
        rules.check_signature(req, req.key, self.chain_id)
        if req.key in self.chain.roster(self.chain.head).eventual() or req.key in self.requests:
            return Verdict.IGNORE
        if forwarder is not None:
            rnd = self.current_round()
            if rnd != self._brought_round:
                self._brought, self._brought_round = Counter(), rnd
            if self._brought[forwarder] >= REQUESTS_PER_PEER:
                log.info("join request of %s ignored: its peer's quota is spent", short(req.key))
                return Verdict.IGNORE
            self._brought[forwarder] += 1
        self.requests[req.key] = req
        while len(self.requests) > MAX_REQUESTS:
            self.requests.popitem(last=False)
        log.info("join request from %s", short(req.key))
        return Verdict.ACCEPT

    def on_change(self, tx: Membership) -> Verdict:
        """A signature that does not hold is a lie (REJECT); a change that is stale or
        not valid on our head now is only useless here (IGNORE: heads differ)."""
        membership.check_signatures(self.genesis, self.chain_id, tx)
        h = tx.hash()
        if h in self.pending or len(self.pending) >= MAX_PENDING:
            return Verdict.IGNORE
        try:
            roster = self.chain.roster(self.chain.head)
            membership.check_change(self.genesis, self.chain_id, roster, self.current_round(), tx)
        except InvalidError as exc:
            log.info("membership change not applicable on our head: %s", exc)
            return Verdict.IGNORE
        self.pending[h] = tx
        log.info(
            "pending %s of %s from round %d",
            membership.KIND_NAMES[tx.kind],
            short(tx.key),
            tx.from_round,
        )
        return Verdict.ACCEPT

    def for_block(self, parent: bytes, block_round: int) -> tuple[Membership, ...]:
        """What our block on `parent` carries (consensus.membership.pick)."""
        self.prune(block_round)
        try:
            roster = self.chain.roster(parent)
        except LookupError:
            return ()
        return membership.pick(
            self.genesis, self.chain_id, roster, block_round, list(self.pending.values())
        )

    def prune(self, rnd: int) -> None:
        """Drop changes no block of round `rnd` on the head can carry (stale, or carried
        already: the head's roster has them), and requests of members. Every node prunes
        by the same rule on its head, so nodes on one head list the same pending set."""
        roster = self.chain.roster(self.chain.head)
        for h, tx in list(self.pending.items()):
            try:
                membership.check_change(self.genesis, self.chain_id, roster, rnd, tx)
            except InvalidError:
                del self.pending[h]
        members = roster.eventual()
        for key in [k for k in self.requests if k in members]:
            del self.requests[key]
