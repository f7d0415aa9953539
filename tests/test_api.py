"""The HTTP API over a real LevelDB chain of real signed blocks, queried over loopback HTTP.

`build_node` is shared with the CLI tests: genesis plus five blocks at rounds 0, 1, 3, 4, 6
(rounds 2 and 5 produced no block), a losing fork block at height 2, finality at height 2,
real digits-mlp model bytes as every block's model blob, and a round log for rounds 6 and 7.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry, Counter

from consensus import rules
from consensus.crypto import sha256
from consensus.strategy import rule_for
from consensus.types import Block
from node.api import create_app, serve_api
from node.roundlog import ProofSeen, RoundLog
from node.view import NodeView
from prover.models import build_model, model_to_bytes
from storage import BlockMeta, ChainStore
from tests.chainfactory import Chain, make_chain

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
    return rules.sign(block, chain.key_of(block.proposer), chain.cid)


def build_node(path: Path, *, now_round: int = NOW_ROUND, store_initial: bool = True) -> Node:
    base = make_chain(n=3, num_batches=8, finality_depth=3)
    initial = model_to_bytes(build_model(ARCH, 1000))
    genesis = dataclasses.replace(base.genesis, initial_model_hash=sha256(initial))
    chain = Chain(base.participants, base.publisher, genesis, base.batches)
    store = ChainStore.open(path)
    store.init_genesis(chain.cid, genesis.encode())
    if store_initial:
        store.put_blob(initial)

    hashes, blocks, models = [chain.cid], [], [initial]
    parent, score = chain.cid, 0
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
        role="observer",
        peers=lambda: list(PEERS),
        now_ms=lambda: t.genesis_ms + now_round * t.round_ms + t.round_ms // 2,
        registry=registry,
    )
    return Node(store, chain, view, hashes, blocks, models, fork, log)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = build_node(tmp_path_factory.mktemp("api") / "store")
    yield n
    n.store.close()


@pytest.fixture
async def api(node: Node, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    port = await nursery.start(serve_api, create_app(node.view), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        yield client


async def _json(client: httpx.AsyncClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    return resp.json()


# ---------------------------------------------------------------------- happy paths


async def test_status(api: httpx.AsyncClient, node: Node) -> None:
    s = await _json(api, "/status")
    assert s["chain_id"] == node.chain.cid.hex()
    assert s["chain_name"] == "test"
    assert (s["peer_id"], s["role"], s["peers"]) == ("12D3KooWSelf", "observer", 2)
    assert s["head"]["hash"] == node.hashes[-1].hex()
    assert s["head"]["height"] == 5 and s["head"]["round"] == 6
    assert s["head"]["score"] == 10 * 5
    assert s["finalized"] == {"hash": node.hashes[2].hex(), "height": 2}
    assert (s["round"], s["rounds_total"]) == (NOW_ROUND, 8)


async def test_block_by_height_and_hash(api: httpx.AsyncClient, node: Node) -> None:
    blk = node.blocks[1]
    by_height = await _json(api, "/blocks/2")
    by_hash = await _json(api, f"/blocks/{node.hashes[2].hex().upper()}")
    assert by_height == by_hash
    assert by_height["hash"] == node.hashes[2].hex()
    assert by_height["parent"] == node.hashes[1].hex()
    assert (by_height["height"], by_height["round"], by_height["rank"]) == (2, 1, 1)
    assert by_height["proposer"] == blk.proposer.hex()
    assert (by_height["score"], by_height["cumulative_score"]) == (10, 20)
    assert by_height["model_hash"] == sha256(node.models[2]).hex()
    assert by_height["batch_index"] == 1
    assert by_height["final"] is True and by_height["canonical"] is True
    assert {c["id"] for c in by_height["commits"]} == {c.hash().hex() for c in blk.commits}
    assert sorted(p["k"] for p in by_height["proofs"]) == [8, 9, 10]
    # above finality: canonical but not final
    assert (await _json(api, "/blocks/3"))["final"] is False


async def test_genesis_and_fork_blocks(api: httpx.AsyncClient, node: Node) -> None:
    g = await _json(api, "/blocks/0")
    assert g["genesis"] is True and g["hash"] == node.chain.cid.hex()
    assert g["round"] is None and g["final"] is True
    assert g["model_hash"] == node.chain.genesis.initial_model_hash.hex()
    f = await _json(api, f"/blocks/{node.fork.hex()}")
    assert f["height"] == 2 and f["canonical"] is False and f["final"] is False


async def test_head(api: httpx.AsyncClient, node: Node) -> None:
    h = await _json(api, "/blocks/head")
    assert h == await _json(api, "/blocks/5")
    assert h["hash"] == node.hashes[-1].hex()


async def test_blocks_range(api: httpx.AsyncClient, node: Node) -> None:
    page = await _json(api, "/blocks")
    assert [b["height"] for b in page["blocks"]] == [0, 1, 2, 3, 4, 5]
    assert page["next_from"] is None and page["head_height"] == 5
    page = await _json(api, "/blocks?from=2&to=4")
    assert [b["hash"] for b in page["blocks"]] == [h.hex() for h in node.hashes[2:5]]
    page = await _json(api, "/blocks?from=4&to=50")
    assert [b["height"] for b in page["blocks"]] == [4, 5]
    assert (await _json(api, "/blocks?from=9"))["blocks"] == []


async def test_blocks_capped_per_call(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.view.MAX_BLOCKS_PER_CALL", 2)
    page = await _json(api, "/blocks?from=1")
    assert [b["height"] for b in page["blocks"]] == [1, 2] and page["next_from"] == 3
    page = await _json(api, "/blocks?from=3&to=4")
    assert [b["height"] for b in page["blocks"]] == [3, 4] and page["next_from"] is None
    page = await _json(api, "/blocks")  # default: the last page up to the head
    assert [b["height"] for b in page["blocks"]] == [4, 5] and page["next_from"] is None


async def test_round_with_block(api: httpx.AsyncClient, node: Node) -> None:
    r = await _json(api, "/rounds/6")
    last = node.blocks[-1]
    assert r["observed"] is True
    assert r["reveal"] == {
        "revealed": True,
        "batch_index": 6,
        "sealed": [s.hex() for s in last.reveal.sealed],
    }
    assert {(p["participant"], p["k"], p["valid"]) for p in r["proofs"]} == {
        (p.participant.hex(), p.k, True) for p in last.proofs
    }
    assert [x["rank"] for x in r["ranking"]] == [1, 2, 3]
    assert r["ranking"][0]["participant"] == last.proposer.hex()
    assert r["winner"] == {"block": node.hashes[-1].hex(), "proposer": last.proposer.hex()}
    assert r["accuracy_ppm"] == 912_345 and r["accuracy"] == pytest.approx(0.912345)
    assert r["block"]["hash"] == node.hashes[-1].hex()


async def test_round_from_chain_only_and_in_progress(api: httpx.AsyncClient, node: Node) -> None:
    r = await _json(api, "/rounds/3")  # not in the round log: the chain still answers
    assert r["observed"] is False and r["block"]["height"] == 3 and r["proofs"] == []
    r = await _json(api, "/rounds/7")
    assert r["block"] is None and r["winner"] is None
    assert r["proofs"][0]["valid"] is False and r["proofs"][0]["reason"] == "bad proof"
    assert r["notes"] == ["publisher revealed late"]


async def test_peers(api: httpx.AsyncClient) -> None:
    assert await _json(api, "/peers") == {"count": 2, "peers": PEERS}


async def test_model_bytes(api: httpx.AsyncClient, node: Node) -> None:
    for height in (0, 3):
        resp = await api.get(f"/models/{height}")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/octet-stream"
        assert resp.headers["x-zkpot-architecture"] == ARCH
        assert resp.content == node.models[height]
        assert resp.headers["x-zkpot-model-hash"] == sha256(node.models[height]).hex()


async def test_metrics(api: httpx.AsyncClient) -> None:
    resp = await api.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=")
    text = resp.text
    assert "# TYPE zkpot_proofs_verified_total counter" in text
    assert re.search(r"^zkpot_proofs_verified_total 3\.0$", text, re.M)
    assert re.search(r"^zkpot_chain_head_height 5\.0$", text, re.M)
    assert re.search(r"^zkpot_chain_finalized_height 2\.0$", text, re.M)
    assert re.search(rf"^zkpot_chain_round {NOW_ROUND}\.0$", text, re.M)
    assert re.search(r"^zkpot_peers 2\.0$", text, re.M)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/blocks/99", 404, "block 99 not found (head is at height 5)"),
        ("/blocks/" + "ab" * 32, 404, "not found on this node"),
        ("/blocks/xyz", 400, "malformed block reference 'xyz'"),
        ("/blocks/" + "ab" * 31, 400, "malformed block reference"),
        ("/blocks/-1", 400, "malformed block reference"),
        ("/blocks?from=abc", 400, "'from' must be a non-negative integer"),
        ("/blocks?from=4&to=2", 400, "from (4) is above to (2)"),
        ("/rounds/2", 404, "round 2: no canonical block"),
        ("/rounds/8", 404, "round 8 does not exist: this chain has rounds 0..7"),
        ("/rounds/x", 400, "the round must be a non-negative integer"),
        ("/models/99", 404, "block 99 not found (head is at height 5)"),
        ("/models/x", 400, "the height must be a non-negative integer"),
        ("/nope", 404, "no such endpoint /nope"),
    ],
)
async def test_errors(api: httpx.AsyncClient, path: str, status: int, fragment: str) -> None:
    body = await _json(api, path, status)
    assert set(body) == {"error"} and fragment in body["error"], body


async def test_future_round_and_missing_model(node: Node, tmp_path: Path) -> None:
    early = build_node(tmp_path / "store", now_round=3, store_initial=False)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, create_app(early.view), "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                body = await _json(c, "/rounds/5", 404)
                assert body["error"] == "round 5 has not started yet (current round is 3)"
                body = await _json(c, "/models/0", 404)
                assert body["error"] == "the initial model is not stored on this node"
            nursery.cancel_scope.cancel()
    finally:
        early.store.close()


async def test_internal_error_is_json(node: Node) -> None:
    def broken_peers() -> list[dict[str, Any]]:
        raise RuntimeError("p2p host is gone")

    view = NodeView(
        node.store,
        node.chain.genesis,
        node.roundlog,
        peer_id="x",
        role="observer",
        peers=broken_peers,
        registry=CollectorRegistry(),
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, create_app(view), "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            body = await _json(c, "/peers", 500)
            assert body == {
                "error": "internal error: RuntimeError: p2p host is gone; see the node's log"
            }
            assert (await c.get("/blocks/1")).status_code == 200  # the server carries on
        nursery.cancel_scope.cancel()


async def test_post_is_rejected(api: httpx.AsyncClient) -> None:
    resp = await api.post("/status")
    assert resp.status_code == 405 and "read-only" in resp.json()["error"]


# ---------------------------------------------------------------------- serving


async def test_cancellation_stops_the_server_and_frees_the_port(node: Node) -> None:
    app = create_app(node.view)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, app, "127.0.0.1", 0)
            async with httpx.AsyncClient() as c:
                assert (await c.get(f"http://127.0.0.1:{port}/status")).status_code == 200
            nursery.cancel_scope.cancel()
        # the same port binds again at once: the listener is closed
        async with trio.open_nursery() as nursery:
            again = await nursery.start(serve_api, app, "127.0.0.1", port)
            assert again == port
            nursery.cancel_scope.cancel()


async def test_shutdown_event_and_port_in_use(node: Node) -> None:
    app = create_app(node.view)
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_api(app, port=0, shutdown=stop, task_status=task_status)
            )
            with pytest.raises(
                OSError, match=r"cannot serve the API on 127\.0\.0\.1:\d+: .*\[api\]"
            ):
                await nursery.start(serve_api, app, "127.0.0.1", port)
            stop.set()  # serve_api returns on its own; the nursery then exits
