"""The HTTP API over a real LevelDB chain of real signed blocks, queried over loopback HTTP.

The chain is `support.apinode.build_node`'s, through the shared `node` fixture (conftest.py).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from consensus import rules
from consensus.crypto import sha256
from node.api import create_app, serve_api
from node.view import NodeView
from support.apinode import ARCH, NOW_ROUND, PEERS, Node, build_node


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
    assert s["chain_id"] == node.chain.chain_id.hex()
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
    assert g["genesis"] is True and g["hash"] == node.chain.chain_id.hex()
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
    # ... with the ranking of the block's proofs (a publisher or observer ranks nothing)
    block3 = node.blocks[2]
    assert [(x["rank"], x["participant"]) for x in r["ranking"]] == [
        (x.rank, x.participant.hex()) for x in rules.rank_proofs(block3.reveal.batch, block3.proofs)
    ]
    assert r["ranking"][0]["participant"] == block3.proposer.hex()
    r = await _json(api, "/rounds/7")
    assert r["block"] is None and r["winner"] is None
    assert r["proofs"][0]["valid"] is False and r["proofs"][0]["reason"] == "bad proof"
    assert r["notes"] == ["publisher revealed late"]


async def test_a_round_s_accuracy_is_its_block_model_s_on_the_test_split(
    node: Node, nursery: trio.Nursery
) -> None:
    """Issue 22: `chain round N` printed "accuracy -" on every node (nothing filled the
    round's accuracy); now the API asks the accuracy board for the block's model."""

    class Board:
        async def of(self, model_hash: bytes, blob: bytes) -> float | None:
            assert sha256(blob) == model_hash
            return 0.769

    app = create_app(node.view, board=Board())  # type: ignore[arg-type]
    port = await nursery.start(serve_api, app, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        r = await _json(client, "/rounds/3")
    assert r["accuracy_ppm"] == 769_000 and r["accuracy"] == pytest.approx(0.769)


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
