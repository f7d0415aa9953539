"""End to end, protocol v2 (best-share): real node processes aggregate privately.

Network: node0 publishes; node1..node3 are honest participants; node4 is a free-rider
that commits the parent model unchanged. Every participant's node writes its trained
weights into its own home (node.behaviour's test hook), so the test can recompute each
block's aggregate from the members' own models: the block's aggregate must be their
exact integer mean and its remainder the rest, its model the server step (v6, FedAvgM
in integers) from the parent's with that aggregate, no individual model may appear on the chain,
and the free-rider must never be selected. node1 runs support.dropout_node: at its second
Complete of another's selection it kills itself (SIGKILL) before it unmasks; the
others' shares of its self seed must finish that round's sum (protocol v5's dropout
recovery), so the round's block still carries the exact aggregate with node1 in it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from consensus import optimizer
from consensus.aggregate import weighted_mean
from node.behaviour import FREE_RIDE_ENV, KEEP_WEIGHTS_ENV
from node.tools.testnet import init
from prover import aggregation
from prover.data import load_dataset
from prover.train import evaluate_float
from support.e2e_util import Net, small_net

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("busy_core")]

FREE_RIDER = 4
DROPOUT = 1
DROPOUT_NODE = Path(__file__).parent / "support" / "dropout_node.py"


def _weights_dir(net: Net, i: int) -> Path:
    return net.home(i).path / "test-weights"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("aggnet") / "net"
    # 40 s rounds (as the attack test): with a busy core, a 24 s round's proofs often
    # finish after its proof deadline and no round aggregates; rounds still end as soon
    # as their block is known
    spec = dataclasses.replace(small_net(5), participants=4, rule="best-share", round_seconds=40)
    init(root, spec)
    n = Net(root, spec)
    for i in range(5):
        env = {KEEP_WEIGHTS_ENV: str(root / f"node{i}" / "test-weights")}
        if i == FREE_RIDER:
            env[FREE_RIDE_ENV] = "1"
        if i == DROPOUT:
            home = n.home(i)
            args = [str(DROPOUT_NODE), str(root / "dropout.json"), "2", "--home", str(home.path)]
            with (home.path / "node.log").open("ab") as log:
                n.procs[i] = subprocess.Popen(
                    [sys.executable, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                )
            continue
        n.start(i, env)
    try:
        yield n
    finally:
        n.stop()


def _keys(net: Net) -> dict[str, int]:
    return {net.home(i).load_key().public.hex(): i for i in range(1, 5)}


def test_blocks_carry_the_members_exact_mean_and_never_a_free_rider(net: Net) -> None:
    net.wait_finalized([0, 2, 3, 4], 3, timeout=300)  # node1 may have dropped out already
    # the first rounds' models may not beat the parent on their batch (then nobody is
    # eligible and the block keeps the parent): wait for two final aggregates
    end = time.time() + 300
    while time.time() < end and _aggregated_final(net) < 2:
        time.sleep(2)
    keys = _keys(net)
    artifacts = str(net.home(1).artifacts)
    arch = net.home(0).load_genesis().task.architecture
    final = net.status(0)["finalized"]["height"]  # type: ignore[index]
    genesis_rule = net.home(0).load_genesis().rule
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
            assert _velocity(net, h) == _velocity(net, h - 1), f"block {h}: new velocity"
            continue
        aggregated += 1
        # v6 (the testnet's default server step): the block's model is FedAvgM's step
        # from the parent's model and velocity with the aggregate, which the members'
        # commitments check; the aggregate is their exact mean
        mean_blob = net.get(0, f"/models/{h}?part=aggregate")
        momentum = optimizer.server_of(genesis_rule)
        assert momentum is not None
        parent = net.get(0, f"/models/{h - 1}")
        g2, v2 = aggregation.server_step(
            artifacts, arch, parent, _velocity(net, h - 1), mean_blob, momentum
        )
        assert aggregation.exact_params(artifacts, arch, model) == g2, f"block {h}: not the step"
        assert _velocity(net, h) == optimizer.encode_velocity(v2)
        model = mean_blob
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


def _velocity(net: Net, h: int) -> bytes:
    """The velocity after block h (v6), b"" while it is zero."""
    try:
        blob: bytes = net.get(0, f"/models/{h}?part=velocity")
    except httpx.HTTPStatusError as exc:
        assert exc.response.status_code == 404
        return b""
    return blob


def _aggregated_final(net: Net) -> int:
    """How many final blocks on node0 carry an aggregate (have members)."""
    final = net.status(0)["finalized"]["height"]  # type: ignore[index]
    return sum(1 for h in range(1, final + 1) if net.get(0, f"/blocks/{h}")["members"])


def test_a_member_killed_right_after_complete_is_recovered_from_the_others_shares(
    net: Net,
) -> None:
    """node1 dies (SIGKILL) at a Complete that lists its vector, before it unmasks. The
    round's block still carries that selection's aggregate, node1 among its members:
    the others revealed their shares of its self seed and the aggregator recovered it.
    The block's model is the members' exact mean (checked from their own weights), and
    the network goes on without node1."""
    marker = net.root / "dropout.json"
    end = time.time() + 600
    while not marker.exists() and time.time() < end:
        time.sleep(1)
    assert marker.exists(), "node1 never reached a second Complete of another's selection"
    dropped = json.loads(marker.read_text())
    rnd = dropped["round"]
    assert net.procs[DROPOUT].wait(timeout=30) != 0  # it really died
    block = None
    while block is None and time.time() < end:
        block = net.get(0, f"/rounds/{rnd}").get("block")
        time.sleep(1)
    assert block is not None, f"round {rnd} made no block after its member died"
    keys = _keys(net)
    members = sorted(keys[m] for m in block["members"])
    assert DROPOUT in members, f"round {rnd}: {members} (node1's seed was not recovered)"
    artifacts = str(net.home(2).artifacts)
    arch = net.home(0).load_genesis().task.architecture
    qs = [
        aggregation.params_of(
            artifacts, arch, (_weights_dir(net, i) / f"round-{rnd}.bin").read_bytes()
        )
        for i in members
    ]
    mean, rest = weighted_mean(qs, [1] * len(qs))
    model = net.get(0, f"/models/{block['height']}?part=aggregate")
    assert aggregation.exact_params(artifacts, arch, model) == mean
    assert bytes.fromhex(block["remainder"]) == bytes(rest)
    shares = net.get(0, f"/rounds/{rnd}")["aggregation"].get("SeedShare", 0)
    assert shares >= 1, "no share was revealed for the dropped member"
    # ...and the network goes on without it
    while time.time() < end + 240:
        sts = [net.status(i) for i in (0, 2, 3)]
        if all(st and st["finalized"]["height"] > block["height"] for st in sts):
            return
        time.sleep(1)
    raise AssertionError(f"the network stopped after round {rnd}: {sts}")
