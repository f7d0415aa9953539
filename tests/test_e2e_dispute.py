"""End to end, protocol v2: a member that lies about a pairwise mask is named alone.

Network: node0 publishes; node1..node4 participate; node4 masks with another key than
the one its commit published (prover.faults' test hook), consistently, so its own
vector passes its check and only its partners' pair commitments disagree with it. When
the rule selects it, the aggregator disputes the selection, a partner reveals the
pair's shared point with its proof, the liar alone is dropped, and the next attempt
aggregates the three honest members. The liar is never a member of a block and no
honest member is ever named.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest

from node.tools.testnet import init
from prover.faults import WRONG_MASK_KEY_ENV
from support.e2e_util import Net, small_net

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("busy_core")]

LIAR = 4


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("disputenet") / "net"
    spec = dataclasses.replace(small_net(5), participants=4, rule="best-share")
    init(root, spec)
    n = Net(root, spec)
    for i in range(5):
        n.start(i, {WRONG_MASK_KEY_ENV: "1"} if i == LIAR else None)
    try:
        yield n
    finally:
        n.stop()


def test_a_member_with_a_wrong_pairwise_mask_is_named_alone_and_the_round_aggregates(
    net: Net,
) -> None:
    """Every round the rule selects the liar, an honest aggregator names it (and only it);
    in a round where that aggregator holds the three honest proofs (under load it may
    not have verified them all in time: then the round keeps the parent's model), the
    next attempt aggregates them."""
    liar = net.home(LIAR).load_key().public.hex()
    honest = {net.home(i).load_key().public.hex()[:8] for i in range(1, 4)}
    named = re.compile(r"round (\d+): selection \w+: (\w+) committed a wrong mask for its pair")
    end = time.time() + 480
    rounds: dict[int, set[str]] = {}
    blocks: dict[int, dict[str, Any]] = {}
    found = None
    while found is None and time.time() < end:
        for i in range(1, 4):  # honest aggregators' findings
            text = (net.home(i).path / "node.log").read_text()
            for r, who in named.findall(text):
                rounds.setdefault(int(r), set()).add(who)
        for r in sorted(set(rounds) - set(blocks)):
            block = net.get(0, f"/rounds/{r}").get("block")
            if block is not None:
                blocks[r] = block
                if len(block["members"]) == 3:
                    found = r
        time.sleep(1)
    assert rounds, "no honest aggregator ever named the liar"
    assert found is not None, f"no round recovered from a dispute with 3 members: {blocks}"
    for r, who in rounds.items():
        assert who == {liar[:8]}, f"round {r}: named {who}, not only the liar"
    for r, block in blocks.items():
        assert liar not in block["members"], f"round {r}: the liar is a member"
    # a partner showed the pair's true mask in the recovered round
    reveals = "".join((net.home(i).path / "node.log").read_text() for i in range(1, 4))
    assert re.search(rf"round {found}: revealed our shared mask point with {liar[:8]}", reveals)
    # over the whole run: the liar is never a member, no honest member is ever named
    net.wait_finalized([0, 1, 2, 3], max(3, blocks[found]["height"]), timeout=240)
    final = net.status(0)["finalized"]["height"]  # type: ignore[index]
    for h in range(1, final + 1):
        assert liar not in net.get(0, f"/blocks/{h}")["members"], f"block {h}"
    assert not set().union(*rounds.values()) & honest
    # version 5: the reveal makes the false pair commitment evidence, which a block up
    # to the recovered round's carries (its aggregator found it), naming the liar only
    named_on_chain = {
        (e["offender"], e["kind"])
        for h in range(1, final + 1)
        for e in net.get(0, f"/blocks/{h}")["evidence"]
    }
    assert (liar, "false pairwise-mask commitment") in named_on_chain, named_on_chain
    assert {who for who, _ in named_on_chain} == {liar}, named_on_chain
