"""End to end, protocol v7: a model above one gossip message aggregates privately.

mnist-mlp on the built-in MNIST (25,450 parameters: a masked vector of 814 KB, sent as
its update and one VectorPart) under the default best-share rule, on real node
processes: node0 publishes and observes, node1..3 participate. Each participant writes
its trained weights into its own home (node.behaviour's test hook) so the test can
recompute a block's aggregate from the members' own models: it must be their exact
integer mean, which the aggregator can only have summed from every member's whole
vector; the observer's round record counts the parts it received and relayed.
About 5 minutes on 2 cores: a 2^15-row circuit and three mnist-mlp proofs a round.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus import secagg
from consensus.aggregate import weighted_mean
from node.behaviour import KEEP_WEIGHTS_ENV
from node.tools.testnet import init
from prover import aggregation
from support.e2e_util import Net, small_net

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("busy_core")]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("largenet") / "net"
    # keep 100%: every fresh proof is a member, so a block aggregates all three
    spec = dataclasses.replace(
        small_net(4),
        task="mnist-mlp",
        rule="best-share",
        keep_percent=100,
        logrows=15,
        round_seconds=120,
    )
    init(root, spec)
    n = Net(root, spec)
    for i in range(4):
        n.start(i, {KEEP_WEIGHTS_ENV: str(root / f"node{i}" / "test-weights")})
    try:
        yield n
    finally:
        n.stop()


def _aggregated(net: Net) -> list[int]:
    """The final blocks on node0 that carry an aggregate (none while it starts)."""
    status = net.status(0)
    if status is None:
        return []
    final = status["finalized"]["height"]
    return [h for h in range(1, final + 1) if net.get(0, f"/blocks/{h}")["members"]]


def test_a_model_in_two_parts_per_vector_aggregates_to_the_exact_mean(net: Net) -> None:
    genesis = net.home(0).load_genesis()
    n = genesis.aggregation.parameters
    assert n == 25450 and secagg.part_count(n) == 2  # what this test is about
    end = time.time() + 600
    while time.time() < end and not _aggregated(net):
        time.sleep(3)
    heights = _aggregated(net)
    assert heights, "no final block aggregated within 600 s"
    keys = {net.home(i).load_key().public.hex(): i for i in range(1, 4)}
    artifacts, arch = str(net.home(1).artifacts), genesis.task.architecture
    for h in heights:
        block = net.get(0, f"/blocks/{h}")
        members = [keys[m] for m in block["members"]]
        assert len(members) >= 3
        weights = [
            Path(net.home(i).path / "test-weights" / f"round-{block['round']}.bin") for i in members
        ]
        qs = [aggregation.params_of(artifacts, arch, w.read_bytes()) for w in weights]
        mean, rest = weighted_mean(qs, [1] * len(qs))
        aggregate = net.get(0, f"/models/{h}?part=aggregate")
        assert aggregation.exact_params(artifacts, arch, aggregate) == mean, f"block {h}"
        assert bytes.fromhex(block["remainder"]) == bytes(rest)
        # the observer received each member's update and its second part over gossip
        counts = net.get(0, f"/rounds/{block['round']}")["aggregation"]
        assert counts.get("MaskedUpdate", 0) >= len(members)
        assert counts.get("VectorPart", 0) >= len(members)
        assert not any(k.startswith("refused:") for k in counts), counts
