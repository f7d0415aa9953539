"""End to end, protocol v2: a member that lies about a pairwise mask is named alone.

Network: node0 publishes; node1..node4 participate; node4 masks with another key than
the one its commit published (prover.faults' test hook), consistently, so its own
vector passes its check and only its partners' pair commitments disagree with it. When
the rule selects it, the aggregator disputes the selection, a partner reveals the
pair's shared point with its proof, the liar alone is dropped (and, version 5, named by
evidence on chain, which excludes it from selection for a while), and the three honest
members aggregate. The liar is never a member of a block and no honest member is ever
named.
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
    """The first round the rule selects the liar, an honest aggregator disputes the
    selection and names it (and only it): a partner reveals the pair's shared point, and
    the false pair commitment becomes evidence a block carries (version 5), so from then
    on the liar is excluded from selection. Either way the three honest members aggregate
    without it: in the disputed round's next attempt, or in a later round while the liar
    is excluded (under load an aggregator may not hold all three honest proofs in time:
    such a round keeps the parent's model)."""
    liar = net.home(LIAR).load_key().public.hex()
    honest = {net.home(i).load_key().public.hex()[:8] for i in range(1, 4)}
    named = re.compile(r"round (\d+): selection \w+: (\w+) committed a wrong mask for its pair")
    end = time.time() + 720
    rounds: dict[int, set[str]] = {}
    final: dict[int, dict[str, Any]] = {}  # height -> final block (final blocks never change)
    recovered: list[dict[str, Any]] = []
    carried = False  # a final block carries evidence naming the liar
    while not (recovered and carried) and time.time() < end:
        for i in range(1, 4):  # honest aggregators' findings
            text = (net.home(i).path / "node.log").read_text()
            for r, who in named.findall(text):
                rounds.setdefault(int(r), set()).add(who)
        st = net.status(0)
        top = st["finalized"]["height"] if st and st.get("finalized") else 0
        for h in range(len(final) + 1, top + 1):
            final[h] = net.get(0, f"/blocks/{h}")
        if rounds:
            recovered = [
                b for b in final.values() if b["round"] >= min(rounds) and len(b["members"]) == 3
            ]
        carried = any(e["offender"] == liar for b in final.values() for e in b["evidence"])
        time.sleep(2)
    assert rounds, "no honest aggregator ever named the liar"
    assert recovered, f"no final block of round {min(rounds)} or later aggregates 3 members"
    for r, who in rounds.items():
        assert who == {liar[:8]}, f"round {r}: named {who}, not only the liar"
    assert not set().union(*rounds.values()) & honest
    for h, block in final.items():
        assert liar not in block["members"], f"block {h}: the liar is a member"
    # a partner showed the pair's true mask in a disputed round
    reveals = "".join((net.home(i).path / "node.log").read_text() for i in range(1, 4))
    assert any(
        re.search(rf"round {r}: revealed our shared mask point with {liar[:8]}", reveals)
        for r in rounds
    )
    # the reveal made the false pair commitment evidence, carried on chain, naming the liar
    # alone (every node checked it with the real basis)
    named_on_chain = {(e["offender"], e["kind"]) for b in final.values() for e in b["evidence"]}
    assert (liar, "false pairwise-mask commitment") in named_on_chain, named_on_chain
    assert {who for who, _ in named_on_chain} == {liar}, named_on_chain
