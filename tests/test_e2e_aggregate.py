"""End to end, protocol v2 (best-share): real node processes aggregate privately.

Network: node0 publishes; node1..node3 are honest participants; node4 is a free-rider
that commits the parent model unchanged. Every participant's node writes its trained
weights into its own home (prover.faults' test hook), so the test can recompute each
block's aggregate from the members' own models: the block's model must be their exact
integer mean and its remainder the rest, no individual model may appear on the chain,
and the free-rider must never be selected. node1's sixth masking job stalls in its
worker; the test kills node1 then (after its proof, before its masked vector): the
round must still end in a block, without node1's model in it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consensus.aggregate import weighted_mean
from node.tools.testnet import init
from prover import aggregation
from prover.data import load_dataset
from prover.faults import ENV as FAULTS
from prover.faults import FREE_RIDE_ENV, KEEP_WEIGHTS_ENV
from prover.train import evaluate_float
from support.e2e_util import Net, small_net

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("busy_core")]

FREE_RIDER = 4
STALLED = 1


def _weights_dir(net: Net, i: int) -> Path:
    return net.home(i).path / "test-weights"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("aggnet") / "net"
    spec = dataclasses.replace(small_net(5), participants=4, rule="best-share")
    init(root, spec)
    n = Net(root, spec)
    for i in range(5):
        env = {KEEP_WEIGHTS_ENV: str(root / f"node{i}" / "test-weights")}
        if i == FREE_RIDER:
            env[FREE_RIDE_ENV] = "1"
        if i == STALLED:
            env[FAULTS] = "MaskVector:6:300"
        n.start(i, env)
    try:
        yield n
    finally:
        n.stop()


def _keys(net: Net) -> dict[str, int]:
    return {net.home(i).load_key().public.hex(): i for i in range(1, 5)}


def test_blocks_carry_the_members_exact_mean_and_never_a_free_rider(net: Net) -> None:
    net.wait_finalized([0, 1, 2, 3, 4], 3, timeout=300)
    # the first rounds' models may not beat the parent on their batch (then nobody is
    # eligible and the block keeps the parent): wait for two final aggregates
    end = time.time() + 300
    while time.time() < end and _aggregated_final(net) < 2:
        time.sleep(2)
    keys = _keys(net)
    artifacts = str(net.home(1).artifacts)
    arch = net.home(0).load_genesis().task.architecture
    final = net.status(0)["finalized"]["height"]  # type: ignore[index]
    aggregated = 0
    for h in range(1, final + 1):
        block = net.get(0, f"/blocks/{h}")
        model = net.get(0, f"/models/{h}")
        members = [keys[m] for m in block["members"]]
        assert FREE_RIDER not in members, f"block {h} selected the free-rider"
        # no honest participant's own model is ever a block's model (the winner rule's
        # would be); the free-rider's "model" is the parent, which a keep-parent block
        # rightly carries
        for i in range(1, 5):
            own = _weights_dir(net, i) / f"round-{block['round']}.bin"
            if i != FREE_RIDER:
                assert not own.exists() or own.read_bytes() != model, f"block {h} is node{i}'s"
        if not members:
            assert model == net.get(0, f"/models/{h - 1}"), f"block {h}: no members, new model"
            continue
        aggregated += 1
        assert len(members) >= 3
        qs = [
            aggregation.params_of(
                artifacts, arch, (_weights_dir(net, i) / f"round-{block['round']}.bin").read_bytes()
            )
            for i in members
        ]
        mean, rest = weighted_mean(qs, [1] * len(qs))
        assert aggregation.exact_params(artifacts, arch, model) == mean
        assert bytes.fromhex(block["remainder"]) == bytes(rest)
    assert aggregated >= 2, f"only {aggregated} of {final} final blocks aggregated"

    home = net.home(0)
    genesis = home.load_genesis()
    ds = load_dataset(genesis.task.dataset)
    idx = np.frombuffer(home.test_index_file.read_bytes(), dtype="<i8")
    x, y = ds.x[idx].reshape(len(idx), -1), ds.y[idx]
    initial = home.initial_model_file.read_bytes()
    final_model = net.get(0, f"/models/{final}")
    assert evaluate_float(arch, final_model, x, y) > evaluate_float(arch, initial, x, y) + 0.2


def _aggregated_final(net: Net) -> int:
    """How many final blocks on node0 carry an aggregate (have members)."""
    final = net.status(0)["finalized"]["height"]  # type: ignore[index]
    return sum(1 for h in range(1, final + 1) if net.get(0, f"/blocks/{h}")["members"])


def _stalled_round(log: str) -> int | None:
    """The first round node1 proved in but sent no masked vector for (its stalled job)."""
    proved = [int(r) for r in re.findall(r"round (\d+): proved k=", log)]
    masked = {int(r) for r in re.findall(r"round (\d+): sent our masked vector", log)}
    return next((r for r in proved if r not in masked and r > max(masked, default=-1)), None)


def test_a_member_killed_after_its_proof_does_not_stop_the_round(net: Net) -> None:
    """node1's sixth masking job stalls in its worker (the fault): after its proof it
    is silent, and it is killed there. The aggregator drops it, and the round still
    ends in a block that neither holds node1's model nor lets anyone compute it."""
    log = net.home(STALLED).path / "node.log"
    end = time.time() + 300
    rnd = None
    while rnd is None and time.time() < end:
        text = log.read_text()
        rnd = _stalled_round(text) if len(re.findall("sent our masked vector", text)) >= 3 else None
        time.sleep(0.5)
    assert rnd is not None, "node1 never stalled after a proof"
    net.kill9(STALLED)
    block = None
    while block is None and time.time() < end:
        block = net.get(0, f"/rounds/{rnd}").get("block")
        time.sleep(1)
    assert block is not None, f"round {rnd} made no block after its member went silent"
    # the block may come by any of the protocol's paths (an aggregator found node1
    # silent and retried without it; node1 ranked first and the fallback proposer made
    # the block; too few proofs were in time to aggregate and the block keeps the
    # parent): what holds on every path is checked below, through the API
    info = block  # the round's block, as /blocks shows it
    stalled_key = net.home(STALLED).load_key().public.hex()
    assert stalled_key not in info["members"]
    # node1 never sent its vector, nor unmasked: nothing of its model left its node
    text = log.read_text()
    assert f"round {rnd}: sent our masked vector" not in text
    assert f"round {rnd}: unmasked" not in text
    own = (_weights_dir(net, STALLED) / f"round-{rnd}.bin").read_bytes()
    assert net.get(0, f"/models/{info['height']}") != own
    # ...and the network goes on without it (wait_finalized would refuse the dead node)
    while time.time() < end + 240:
        sts = [net.status(i) for i in (0, 2, 3)]
        if all(st and st["finalized"]["height"] > info["height"] for st in sts):
            return
        time.sleep(1)
    raise AssertionError(f"the network stopped after round {rnd}: {sts}")
