"""What every role of this node shares: one context, built once by the engine.

The participant, the aggregation member and the publisher each need the node's key,
its chain (and so the genesis and the chain id), the prover pool, gossip publishing,
the compiled artifacts, the clock, the chain's aggregation rule and the test
behaviour. They take this one object instead of repeating those fields, and read
them through `Role`'s properties.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from consensus.crypto import SigningKey
from consensus.strategy import Rule
from consensus.types import Genesis
from node.behaviour import HONEST, Behaviour
from node.chain import Chain
from node.interfaces import Clock, Prover, Publish


@dataclass(frozen=True)
class NodeContext:
    key: SigningKey
    chain: Chain
    rule: Rule  # consensus.strategy.rule_for(genesis): how this chain's rounds combine models
    prover: Prover
    publish: Publish
    artifacts: Path
    clock: Clock
    behaviour: Behaviour = HONEST  # node.behaviour: honest unless a test says otherwise


class Role:
    """A part this node plays in a round, on the node's one context."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    @property
    def key(self) -> SigningKey:
        return self.ctx.key

    @property
    def chain(self) -> Chain:
        return self.ctx.chain

    @property
    def genesis(self) -> Genesis:
        return self.ctx.chain.genesis

    @property
    def chain_id(self) -> bytes:
        return self.ctx.chain.chain_id

    @property
    def rule(self) -> Rule:
        return self.ctx.rule

    @property
    def prover(self) -> Prover:
        return self.ctx.prover

    @property
    def publish(self) -> Publish:
        return self.ctx.publish

    @property
    def artifacts(self) -> str:
        return str(self.ctx.artifacts)  # the prover's jobs carry it as text

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def behaviour(self) -> Behaviour:
        return self.ctx.behaviour
