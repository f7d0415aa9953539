"""The blocks topic's validation budget, with real hosts: a slow validator cannot hold a block.

py-libp2p keeps a message (and one of its validation slots) while the validator runs;
a block's validator that overruns `block_validation_budget_s` gets IGNORE: not relayed,
no penalty. The node's validator (node.blockrelay) never comes near it.
"""

from __future__ import annotations

import trio

from p2p import GossipConfig, P2PHost, TopicKind, Verdict
from support.chainfactory import make_chain
from support.p2p_util import absent, config, connect_line, running, wait_for

CHAIN = make_chain()


async def test_a_block_validator_past_its_budget_is_ignore_and_the_block_is_not_relayed() -> None:
    calls: list[float] = []

    async def stuck(item: object, raw: bytes, forwarder: object) -> Verdict:
        calls.append(trio.current_time())
        await trio.sleep_forever()
        raise AssertionError

    gossip = GossipConfig(block_validation_budget_s=0.5)
    hosts = [P2PHost(config(f"budget{i}", gossip=gossip), CHAIN.chain_id) for i in range(3)]
    hosts[1].gossip.set_validator(TopicKind.BLOCKS, stuck)  # type: ignore[arg-type]
    async with running(hosts):
        await connect_line(hosts)
        block, _ = CHAIN.round_block(0, CHAIN.chain_id, 1, {0: 3, 1: 2})
        before = hosts[1].penalty_score(hosts[0].peer_id)
        await hosts[0].gossip.publish(block)
        await wait_for(lambda: hosts[1].gossip.stats[Verdict.IGNORE] >= 1, 5)
        assert trio.current_time() - calls[0] < 0.5 + 0.5, "decided at the budget"
        assert await absent(hosts[2], lambda d: True, 1.0)
        assert hosts[1].penalty_score(hosts[0].peer_id) <= before
