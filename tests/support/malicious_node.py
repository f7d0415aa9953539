"""A real node process that attacks the aggregation round (tests/test_e2e_agg_attacks.py).

`python tests/support/malicious_node.py ACTIONS --home DIR` runs the ordinary daemon (`zkpot node
start`) with the participant's behaviour changed in this process only, so no test hook
lives on a production path. It rotates through the v2 review's strategies by round:
  round % 3 == 0: its CommitTx carries a mask key that is no curve point (5 bytes);
  round % 3 == 1: as soon as its proof is out it proposes a block that keeps the parent's
                  model (the cheap front-runner), whatever its rank;
  round % 3 == 2: it copies every other proposer's Selection under its own key and
                  publishes a Dispute naming every pair of the copy (baseless), and one
                  for the honest selection's pairs as well, signed by itself.
Otherwise it behaves honestly (it trains, proves and answers as a member). Each attack
it makes is appended to the JSON-lines file ACTIONS, so a test knows it was delivered,
with its mask secret of each round ("secret"); and, as the passive observer every peer
is, it appends every commit and aggregation message it sees or sends ("seen", hex) to
the same file, for the test's attempt to recover honest models from them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio

from consensus import policy, secagg
from consensus.crypto import sha256
from consensus.rules import sign
from consensus.secagg import (
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
)
from consensus.types import Block, CommitTx
from node import aggmember, engine, participant, roundpool
from node.aggregator import keep_parent
from node.roundpool import Mine, RoundState
from node.tools import cli
from p2p import Verdict

STRATEGIES = ("bad-mask-key", "keep-parent", "baseless-dispute")


ACTIONS: Path | None = None


def strategy(rnd: int) -> str:
    return STRATEGIES[rnd % 3]


def record(rnd: int, action: str, **more: str) -> None:
    assert ACTIONS is not None
    with ACTIONS.open("a") as f:
        f.write(json.dumps({"round": rnd, "action": action, **more}) + "\n")


_mask_public = secagg.mask_public
_train_and_commit = participant.Participant._train_and_commit
_propose_when_due = participant.Participant._propose_when_due
_serve = aggmember.Member.serve


async def train_and_commit(self: participant.Participant, rnd: int, opened: int) -> Mine | None:
    bad = strategy(rnd) == "bad-mask-key"
    if bad:
        secagg.mask_public = lambda secret: b"\x05" * 5
    try:
        mine = await _train_and_commit(self, rnd, opened)
    finally:
        secagg.mask_public = _mask_public
    if bad and mine is not None:
        record(rnd, "bad-mask-key", commit=mine.commit.hash().hex())
    if mine is not None:
        record(rnd, "secret", secret=str(mine.mask_secret), key=self.key.public.hex())
    return mine


async def keep_parent_at_once(
    p: participant.Participant, rnd: int, st: RoundState, mine: Mine
) -> Block | None:
    """Attack 3: propose a block that keeps the parent's model the moment our proof is
    out, whatever our rank. The block, if it was made."""
    assert st.reveal is not None
    ranking = policy.ranking_for(st.reveal, st.commits, st.proofs, mine.commit.parent)
    keep = keep_parent(p.chain, mine.commit.parent)
    block = p._candidate(st, mine, ranking, keep)
    if block is not None and await p._propose(rnd, block, keep.blobs()):
        return block
    return None


async def serve_copying(
    m: aggmember.Member, st: RoundState, mine: Mine, opened: int, on_copy: Any = None
) -> None:
    """Attack 1: serve as a member, and copy every other proposer's Selection under our
    key with a Dispute naming all its pairs, on the copy and on the original."""
    copied: set[bytes] = set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, m, st, mine, opened)
        while True:
            changed = st.changed
            for h, sel in list(st.agg.selections.items()):
                if sel.proposer == m.key.public or h in copied:
                    continue
                copied.add(h)
                await _copy_and_dispute(m, sel)
                if on_copy is not None:
                    on_copy(sel)
            await changed.wait()


async def _copy_and_dispute(m: aggmember.Member, sel: Selection) -> None:
    copy = sign(
        Selection(sel.round, sel.parent, m.key.public, 7, sel.proofs, sel.members, bytes(64)),
        m.key,
        m.chain_id,
    )
    await m.publish(copy)
    pairs = tuple(sorted(secagg.pair_id(a, b) for a in sel.members for b in sel.members if a < b))
    for target in (copy, sel):
        await m.publish(sign(Dispute(target.hash(), pairs, bytes(64)), m.key, m.chain_id))


async def propose_when_due(
    self: participant.Participant, rnd: int, opened: int, st: RoundState, mine: Mine
) -> None:
    if strategy(rnd) != "keep-parent":
        await _propose_when_due(self, rnd, opened, st, mine)
        return
    block = await keep_parent_at_once(self, rnd, st, mine)
    if block is not None:
        record(rnd, "keep-parent", block=sha256(block.encode()).hex())


async def serve(self: aggmember.Member, st: RoundState, mine: Mine, opened: int) -> None:
    if strategy(mine.commit.round) != "baseless-dispute":
        await _serve(self, st, mine, opened)
        return

    def on_copy(sel: Selection) -> None:
        record(sel.round, "baseless-dispute", selection=sel.hash().hex())

    await serve_copying(self, st, mine, opened, on_copy)


_validate = roundpool.RoundPool.validate
_publish = engine.Engine.publish
OBSERVED = (CommitTx, Selection, MaskedUpdate, Complete, Unmask, Dispute, PairReveal, SeedShare)


def _seen(item: object) -> None:
    if isinstance(item, OBSERVED):
        assert ACTIONS is not None
        with ACTIONS.open("a") as f:
            f.write(json.dumps({"action": "seen", "hex": item.encode().hex()}) + "\n")


async def validate(self: roundpool.RoundPool, item: Any, forwarder: Any) -> Any:
    verdict = await _validate(self, item, forwarder)
    if verdict is Verdict.ACCEPT:
        _seen(item)
    return verdict


async def publish(self: engine.Engine, item: Any) -> None:
    _seen(item)
    await _publish(self, item)


def main(argv: list[str]) -> Any:
    global ACTIONS
    ACTIONS = Path(argv.pop(0))
    roundpool.RoundPool.validate = validate  # type: ignore[method-assign]
    engine.Engine.publish = publish  # type: ignore[method-assign]
    participant.Participant._train_and_commit = train_and_commit  # type: ignore[method-assign]
    participant.Participant._propose_when_due = propose_when_due  # type: ignore[method-assign]
    aggmember.Member.serve = serve  # type: ignore[method-assign]
    return cli.main(["node", "start", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
