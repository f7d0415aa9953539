"""End to end, protocol v2: a member that lies about a pairwise mask is named alone.

Network: node0 publishes; node1..node4 participate; node4 masks with another key than
the one its commit published (node.behaviour's test hook), consistently, so its own
vector passes its check and only its partners' pair commitments disagree with it. When
the rule selects it, the aggregator disputes the selection, a partner reveals the
pair's shared point with its proof, the liar alone is dropped (and, version 5, named by
evidence on chain, which excludes it from selection for a while), and the three honest
members aggregate. The liar is never a member of a block and no honest member is ever
named.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from node.behaviour import WRONG_MASK_KEY_ENV
from node.tools.testnet import init
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
    """The first round the rule selects the liar, its selection's aggregator (an honest
    one, or the liar itself: its partners' commitments disagree with its own) disputes
    it, a partner reveals the pair's shared point, and the false pair commitment becomes
    evidence a block carries (version 5), naming the liar alone; from then on the liar
    is excluded from selection. The three honest members aggregate without it: in the
    disputed round's next attempt, or in a later round while the liar is excluded (under
    load an aggregator may not hold all three honest proofs in time: such a round keeps
    the parent's model)."""
    liar = net.home(LIAR).load_key().public.hex()
    end = time.time() + 720
    final: dict[int, dict[str, Any]] = {}  # height -> final block (final blocks never change)
    offences: list[int] = []  # the rounds of the evidence naming the liar in final blocks
    recovered: list[dict[str, Any]] = []
    while not recovered and time.time() < end:
        st = net.status(0)
        top = st["finalized"]["height"] if st and st.get("finalized") else 0
        for h in range(len(final) + 1, top + 1):
            final[h] = net.get(0, f"/blocks/{h}")
        offences = [
            e["round"] for b in final.values() for e in b["evidence"] if e["offender"] == liar
        ]
        if offences:
            recovered = [
                b for b in final.values() if b["round"] >= min(offences) and len(b["members"]) == 3
            ]
        time.sleep(2)
    assert offences, "no final block carries evidence naming the liar"
    assert recovered, f"no final block of round {min(offences)} or later aggregates 3 members"
    # the reveal made the false pair commitment evidence, checked by every node with the
    # real basis, naming the liar alone
    named_on_chain = {(e["offender"], e["kind"]) for b in final.values() for e in b["evidence"]}
    assert (liar, "false pairwise-mask commitment") in named_on_chain, named_on_chain
    assert {who for who, _ in named_on_chain} == {liar}, named_on_chain
    for h, block in final.items():
        assert liar not in block["members"], f"block {h}: the liar is a member"
    # (the false-pair evidence quotes a partner's PairReveal of the liar's pair: the
    # dispute and the reveal are proven on chain; an observer's message counts are not
    # reliable here, as a Dispute that arrives before the updates it names is ignored)
