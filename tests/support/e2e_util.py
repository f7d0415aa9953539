"""Shared harness of the end-to-end tests: their network (node.tools.localnet runs it)."""

from __future__ import annotations

from node.tools.localnet import LocalNet, free_base
from node.tools.netspec import TestnetSpec

Net = LocalNet  # the tests' name for it
__all__ = ["Net", "free_base", "small_net"]


def small_net(nodes: int) -> TestnetSpec:
    """The e2e tests' network: three participants, the tiny circuit, short rounds, free ports
    (one free range: the API ports follow the p2p ports, so the two never overlap)."""
    base = free_base(2 * nodes)
    return TestnetSpec(
        nodes=nodes,
        participants=3,
        task="digits-mlp-tiny",
        round_seconds=24,
        eval_batch=4,
        rounds=30,
        logrows=13,
        start_delay_s=25,
        # the scenarios are timed for 24 s rounds; init's estimate (every proof one after
        # another, with a busy core) would ask for more than these tests need
        allow_short_rounds=True,
        p2p_base_port=base,
        api_base_port=base + nodes,
    )
