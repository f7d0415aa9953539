"""End to end, protocol v4: one malicious node process among honest ones cannot stop the
aggregation, pre-empt it, nor get anyone's model out.

Network: node0 publishes; node1..node4 participate; node4 runs support.malicious_node
(the real daemon with the participant's behaviour changed in that process only), which
rotates by round through: a commit with a mask key that is no curve point, a keep-parent
block proposed the moment its proof is out, and copied selections with baseless Disputes
(on its copy and on the honest selection). Asserted through the API and the attacker's
own record of what it sent: every attack was delivered; the bad commit is in no block;
no attacker keep-parent block is canonical while an aggregate of its round exists; blocks
keep carrying aggregates; no block's model is any participant's own model and no pair
secret was ever revealed (no honest partner was ever named).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consensus import secagg
from consensus.secagg import MaskedUpdate, Selection, Unmask
from consensus.types import CommitTx
from node.behaviour import KEEP_WEIGHTS_ENV
from node.tools.testnet import init
from p2p import TopicKind
from p2p.topics import decode_gossip
from prover import aggregation
from support.aggsim import recover
from support.e2e_util import Net, small_net

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("busy_core")]

ATTACKER = 4
MALICIOUS = Path(__file__).parent / "support" / "malicious_node.py"
FINAL = 6  # final blocks to see (every strategy twice)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("attacknet") / "net"
    # 40 s rounds, not small_net's 24: with a core kept busy, four proofs of a 24 s round
    # often finish after its proof deadline, every proposer then holds only its own proof
    # and no round can aggregate, attack or not (seen in CI; rounds still end as soon as
    # their block is known, so this costs little time)
    spec = dataclasses.replace(small_net(5), participants=4, rule="best-share", round_seconds=40)
    init(root, spec)
    n = Net(root, spec)
    for i in range(ATTACKER):  # each participant keeps its weights, for the test to compare
        n.start(i, {KEEP_WEIGHTS_ENV: str(root / f"weights{i}")})
    home = n.home(ATTACKER)
    with (home.path / "node.log").open("ab") as log:
        n.procs[ATTACKER] = subprocess.Popen(
            [sys.executable, str(MALICIOUS), str(root / "actions.jsonl"), "--home", str(home.path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, KEEP_WEIGHTS_ENV: str(root / f"weights{ATTACKER}")},
        )
    try:
        yield n
    finally:
        n.stop()


def test_one_malicious_node_neither_stops_nor_preempts_the_aggregates(net: Net) -> None:
    net.wait_finalized([0, 1, 2, 3], FINAL, timeout=900)
    actions = [json.loads(line) for line in (net.root / "actions.jsonl").read_text().splitlines()]
    delivered = {a["action"] for a in actions} - {"secret", "seen"}
    expected = {"bad-mask-key", "keep-parent"}
    # a baseless Dispute copies another proposer's Selection: in a round where the
    # attacker ranked first, its own selection aggregated and there was none to copy
    attacker_key = net.home(ATTACKER).load_key().public
    others = [
        m
        for a in actions
        if a["action"] == "seen"
        and isinstance(m := decode_gossip(TopicKind.ROUND, bytes.fromhex(a["hex"])), Selection)
        and m.proposer != attacker_key
        and m.round % 3 == 2
    ]
    if others:
        expected.add("baseless-dispute")
    assert delivered == expected, (delivered, len(others))
    bad_commits = {a["commit"] for a in actions if a["action"] == "bad-mask-key"}
    keep_blocks = {a["block"] for a in actions if a["action"] == "keep-parent"}

    blocks = [net.get(0, f"/blocks/{h}") for h in range(1, FINAL + 1)]
    for b in blocks:
        assert not bad_commits & {c["id"] for c in b["commits"]}, f"a bad commit in {b}"
    # version 5: the bad commit is evidence a block carries, naming the attacker only
    attacker = net.home(ATTACKER).load_key().public.hex()
    named = {(e["offender"], e["kind"]) for b in blocks for e in b["evidence"]}
    assert (attacker, "mask key that is no point") in named, named
    assert {who for who, _ in named} == {attacker}, named
    aggregates = [b for b in blocks if b["members"]]
    share = len(aggregates) / len(blocks)
    print(f"aggregates: {len(aggregates)} of {len(blocks)} final blocks ({share:.0%})")
    # the attacker's keep-parent block never wins a round that has an aggregate
    for b in blocks:
        if b["hash"] in keep_blocks:
            assert b["score"] == 1 and not b["members"]
    assert all(b["score"] >= 2 for b in aggregates)
    # the attacker's blocks cannot crowd out the aggregates (CI runs with a busy core:
    # the note of the issue gives the rate measured on an idle machine)
    assert share >= 0.5, [(b["round"], b["proposer"][:8], b["members"]) for b in blocks]
    # an aggregate is never one participant's own model (a model travels only masked)
    for b in aggregates:
        assert len(b["members"]) >= 3
    # what the honest nodes saw: the baseless Disputes were refused (the one on the
    # honest selection is signed by the wrong key, the one on the copy names pairs that
    # never disagreed, or updates nobody sent), so no pair secret was ever revealed
    seen: dict[str, int] = {}
    for i in range(ATTACKER):
        for r in {a["round"] for a in actions if "round" in a}:
            try:
                rec = net.get(i, f"/rounds/{r}")
            except Exception:  # a round this node kept no record of
                continue
            for name, n in rec["aggregation"].items():
                seen[name] = seen.get(name, 0) + n
    print(f"aggregation messages seen by honest nodes: {seen}")
    assert seen.get("Dispute", 0) == 0 and seen.get("PairReveal", 0) == 0, seen
    assert seen.get("MaskedUpdate", 0) > 0 and seen.get("Unmask", 0) > 0, seen


def test_the_attacker_recovers_no_honest_model_from_what_it_saw(net: Net) -> None:
    """The attacker's node is also a passive observer of the whole round topic: with its
    own mask secrets and every commit and aggregation message it saw or sent, the
    attacker's linear algebra (support.aggsim.recover) determines no honest model in any
    round; yet what it saw is real: each completed selection's unmasked sum is exactly
    the sum of its members' quantised models (their own weights, kept by a test hook)."""
    net.wait_finalized([0, 1, 2, 3], FINAL, timeout=900)
    actions = [json.loads(line) for line in (net.root / "actions.jsonl").read_text().splitlines()]
    secrets = {a["round"]: int(a["secret"]) for a in actions if a["action"] == "secret"}
    attacker = net.home(ATTACKER).load_key().public
    seen = [
        decode_gossip(TopicKind.ROUND, bytes.fromhex(a["hex"]))
        for a in actions
        if a["action"] == "seen"
    ]
    selections = {m.hash(): m for m in seen if isinstance(m, Selection)}
    arch = net.home(0).load_genesis().task.architecture
    artifacts = str(net.home(1).artifacts)
    checked = 0
    for rnd in sorted({s.round for s in selections.values()}):
        in_round = [
            m
            for m in seen
            if (isinstance(m, Selection) and m.round == rnd)
            or (
                not isinstance(m, Selection | CommitTx)
                and m.selection in selections
                and selections[m.selection].round == rnd
            )
        ]
        keys = {
            c.participant: c.mask_key for c in seen if isinstance(c, CommitTx) and c.round == rnd
        }
        honest = sorted({m.member for m in in_round if isinstance(m, MaskedUpdate)} - {attacker})
        if rnd not in secrets or not honest:
            continue
        found = recover(in_round, {attacker: secrets[rnd]}, honest, keys)
        assert found == {}, f"round {rnd}: recovered {sorted(k.hex()[:8] for k in found)}"
        # the same messages give each completed selection's true sum
        for h, sel in selections.items():
            if sel.round != rnd:
                continue
            ups = {
                m.member: m for m in in_round if isinstance(m, MaskedUpdate) and m.selection == h
            }
            ums = {m.member: m for m in in_round if isinstance(m, Unmask) and m.selection == h}
            if not (set(sel.members) <= set(ups) and set(sel.members) <= set(ums)):
                continue
            n = len(ups[sel.members[0]].vector) // 32
            total = secagg.unmasked_sum(
                [secagg.decode_vector(ups[m].vector, n) for m in sel.members],
                [ums[m].seed for m in sel.members],
            )
            models = []
            for m in sel.members:
                i = next(i for i in range(1, ATTACKER + 1) if net.home(i).load_key().public == m)
                w = (net.root / f"weights{i}" / f"round-{rnd}.bin").read_bytes()
                models.append(aggregation.params_of(artifacts, arch, w))
            assert total == [sum(col) for col in zip(*models, strict=True)]
            checked += 1
    assert checked > 0, "the observer saw no completed selection"
    print(f"observer: {checked} completed selections summed exactly, no honest model recovered")
