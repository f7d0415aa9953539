"""A node's read side over a real LevelDB chain of real signed blocks: what the API and CLI tests query.

`build_node`: genesis plus five blocks at rounds 0, 1, 3, 4, 6 (rounds 2 and 5 produced no
block), a losing fork block at height 2, finality at height 2, real digits-mlp model bytes
as every block's model blob, and a round log for rounds 6 and 7.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from consensus import rules
from consensus.crypto import sha256
from consensus.strategy import rule_for
from consensus.types import Block
from node.roundlog import ProofSeen, RoundLog
from node.view import NodeView
from prover.models import build_model, model_to_bytes
from storage import BlockMeta, ChainStore
from support.chainfactory import Chain, make_chain

ARCH = "digits-mlp"
BLOCK_ROUNDS = (0, 1, 3, 4, 6)
NOW_ROUND = 7
SCORES = {0: 10, 1: 9, 2: 8}  # participant index -> proven k; index 0 wins every round
PEERS = [
    {"peer_id": "12D3KooWPeerA", "addrs": ["/ip4/127.0.0.1/tcp/27101"], "role": "participant"},
    {"peer_id": "12D3KooWPeerB", "addrs": ["/ip4/127.0.0.1/tcp/27102"], "role": "publisher"},
]


@dataclass
class Node:
    """What the tests know about the chain they built, to compare the API against."""

    store: ChainStore
    chain: Chain
    view: NodeView
    hashes: list[bytes]  # canonical, by height
    blocks: list[Block]  # canonical blocks at heights 1.. (index height - 1)
    models: list[bytes]  # model blob by height (0 = initial model)
    fork: bytes  # a non-canonical block at height 2
    roundlog: RoundLog


def _block_with_model(
    chain: Chain, rnd: int, parent: bytes, height: int, scores: dict[int, int], model: bytes
) -> Block:
    """chainfactory's block, re-pointed at real model bytes and re-signed by its proposer.

    The API never validates blocks, so only the model hash needs to match the stored blob.
    """
    block, _ = chain.round_block(rnd, parent, height, scores)
    block = dataclasses.replace(block, model_hash=sha256(model))
    return rules.sign(block, chain.key_of(block.proposer), chain.chain_id)


def build_node(path: Path, *, now_round: int = NOW_ROUND, store_initial: bool = True) -> Node:
    base = make_chain(n=3, num_batches=8, finality_depth=3)
    initial = model_to_bytes(build_model(ARCH, 1000))
    genesis = dataclasses.replace(base.genesis, initial_model_hash=sha256(initial))
    chain = Chain(base.participants, base.publisher, genesis, base.batches)
    store = ChainStore.open(path)
    store.init_genesis(chain.chain_id, genesis.encode())
    if store_initial:
        store.put_blob(initial)

    hashes, blocks, models = [chain.chain_id], [], [initial]
    parent, score = chain.chain_id, 0
    fork = b""
    for height, rnd in enumerate(BLOCK_ROUNDS, start=1):
        model = model_to_bytes(build_model(ARCH, rnd))
        block = _block_with_model(chain, rnd, parent, height, SCORES, model)
        store.put_blob(model)
        score += rule_for(chain.genesis).score(block)
        raw = block.encode()
        store.put_block(sha256(raw), raw, BlockMeta(parent, height, score), new_head=True)
        if height == 2:  # a losing sibling: stored, never canonical
            losing, _ = chain.round_block(2, parent, height, {1: 5})
            fraw = losing.encode()
            fork = sha256(fraw)
            store.put_block(fork, fraw, BlockMeta(parent, height, score - 10 + 5))
        parent = sha256(raw)
        hashes.append(parent)
        blocks.append(block)
        models.append(model)
    store.set_finalized(hashes[2])

    log = RoundLog(keep=16)
    rec = log.record(6)
    last = blocks[-1]
    for c in last.commits:
        rec.commits[c.hash()] = c.participant
    rec.revealed, rec.sealed, rec.batch_index = True, last.reveal.sealed, 6
    for p in last.proofs:
        rec.proofs[p.commit_id] = ProofSeen(p.participant, p.commit_id, p.k, valid=True)
    by_k = sorted(last.proofs, key=lambda p: -p.k)  # distinct scores: no tie-break needed
    rec.ranking = [(i + 1, p.participant, p.k) for i, p in enumerate(by_k)]
    rec.block, rec.proposer, rec.accuracy_ppm = hashes[-1], last.proposer, 912_345
    rec7 = log.record(7)  # in progress: one bad proof, no block yet
    bad = chain.participants[2].public
    rec7.commits[sha256(b"c7")] = bad
    rec7.proofs[sha256(b"c7")] = ProofSeen(bad, sha256(b"c7"), 99, valid=False, reason="bad proof")
    rec7.notes.append("publisher revealed late")

    registry = CollectorRegistry()
    Counter("zkpot_proofs_verified", "Proofs verified", registry=registry).inc(3)
    t = genesis.timing
    view = NodeView(
        store,
        genesis,
        log,
        peer_id="12D3KooWSelf",
        name="node7",
        addrs=lambda: ["/ip4/127.0.0.1/tcp/27107/p2p/12D3KooWSelf"],
        role="observer",
        peers=lambda: list(PEERS),
        now_ms=lambda: t.genesis_ms + now_round * t.round_ms + t.round_ms // 2,
        registry=registry,
    )
    return Node(store, chain, view, hashes, blocks, models, fork, log)
