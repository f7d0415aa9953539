"""End to end under faults: a misbehaving participant, a forging publisher key, a killed leader.

Network: node0 publishes, node1 and node2 are honest participants, and node3's key
is driven by tests/support/adversary_node.py, which commits to weights it does not have,
gossips garbage proofs claiming the whole batch, re-signs honest proofs, commits
late, and forges reveals that do not match the genesis root.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from consensus import selection
from node.home import Home
from node.tools.testnet import init
from support import child_env
from support.e2e_util import Net, small_net

# Slow, and run with one core kept busy: deadlines are upper bounds, not a schedule.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("busy_core")]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("faultnet") / "net"
    spec = small_net(4)
    init(root, spec)
    n = Net(root, spec)
    for i in range(3):
        n.start(i)
    adversary_log = (root / "adversary.log").open("ab")
    adversary = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "support.adversary_node",
            "--home",
            str(root / "node3"),
            "--publisher-key",
            str(root / "node0" / "node.key"),
            "--api",
            n.api(0),
        ],
        stdout=adversary_log,
        stderr=subprocess.STDOUT,
        env=child_env(),
    )
    try:
        yield n
    finally:
        adversary.kill()
        adversary.wait()
        n.stop()


def _adversary_events(net: Net) -> list[dict[str, Any]]:
    lines = (net.root / "adversary.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_misbehaving_participant_never_leads_and_forged_reveals_are_ignored(net: Net) -> None:
    net.wait_finalized([0, 1, 2], 4, timeout=300)
    events = _adversary_events(net)
    kinds = {e["event"] for e in events}
    assert {"commit", "forged_reveal", "garbage_proof", "far_future_proof"} <= kinds, events
    adversary = net.home(3).load_key().public.hex()
    batches = {b.index: b.hash() for b in net.home(0).load_batches()}
    for height in range(1, 5):
        for i in range(3):
            block = net.get(i, f"/blocks/{height}")
            assert block["proposer"] != adversary
            assert all(p["participant"] != adversary for p in block["proofs"])
        # the reveal every node kept is the genuine batch of that round
        assert block["batch_index"] == block["round"]
        rnd = net.get(0, f"/rounds/{block['round']}")
        assert rnd["reveal"]["revealed"] and block["round"] in batches
    # garbage proofs that reached a node were recorded as invalid with a reason
    seen = [
        p
        for e in events
        if e["event"] in ("garbage_proof", "copied_proof")
        for p in net.get(1, f"/rounds/{e['round']}")["proofs"]
        if p["participant"] == adversary
    ]
    assert all(p["valid"] is not True for p in seen)
    assert any(p["valid"] is False and p["reason"] for p in seen), seen


def test_killing_the_leader_mid_round_lets_the_fallback_proposer_commit(net: Net) -> None:
    batches = {b.index: b for b in net.home(0).load_batches()}
    keys = {i: net.home(i).load_key().public for i in (1, 2)}
    adversary = net.home(3).load_key().public.hex()
    deadline = time.time() + 240
    while time.time() < deadline:
        rnd = net.status(0)["round"]
        info = net.client.get(f"{net.api(0)}/rounds/{rnd}")
        if rnd is None or info.status_code != 200:
            time.sleep(0.3)
            continue
        # The leader proposes once every sealed proof is verified, else at the proof
        # deadline: a round that sealed the adversary's commit (whose proof never
        # verifies) keeps it waiting, which leaves time to kill it after both honest
        # proofs are in, well before that deadline.
        j = info.json()
        sealed_by = {c["participant"] for c in j["commits"] if c["id"] in j["reveal"]["sealed"]}
        if (
            adversary not in sealed_by
            or int(time.time() * 1000) > j["proof_deadline_ms"] - 2500
            or j["block"] is not None
        ):
            time.sleep(0.3)
            continue
        proofs = {
            p["participant"]: p["k"]
            for p in j["proofs"]
            if p["valid"] and p["participant"] in {k.hex() for k in keys.values()}
        }
        if len(proofs) < 2 or max(proofs.values()) < 1:
            time.sleep(0.3)
            continue
        seed = batches[rnd].hash()
        ranked = sorted(
            proofs, key=lambda who: (-proofs[who], selection.tiebreak_key(seed, bytes.fromhex(who)))
        )
        leader = next(i for i, k in keys.items() if k.hex() == ranked[0])
        fallback = next(i for i in keys if i != leader)
        if proofs[ranked[1]] < 1:
            time.sleep(0.3)
            continue
        net.kill9(leader)
        break
    else:
        raise AssertionError("never saw a round with two valid honest proofs")
    # The round's block must come from the rank-2 participant.
    end = time.time() + 120
    block = None
    while time.time() < end:
        info = net.get(0, f"/rounds/{rnd}")
        if info.get("block"):
            block = info["block"]
            break
        time.sleep(1)
    assert block is not None, f"no block for round {rnd}: {info}"
    assert block["proposer"] == keys[fallback].hex()
    assert block["rank"] == 2
    net.start(leader)  # and the network goes on
    target = net.status(0)["finalized"]["height"] + 1  # type: ignore[index]
    net.wait_finalized([0, 1, 2], target, timeout=240)
    assert isinstance(Home, type)
