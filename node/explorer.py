"""The explorer: a read-only web page every node serves at `/`, with no build step and
nothing from a CDN. The server renders the page with the node's state at that moment
(head, finality, recent blocks, peers); a small script then refreshes it from the JSON
API every few seconds, shows one round's commits, reveal, proofs and verdicts on a
click, and draws the global model's test accuracy and proven score per round on a
canvas. Everything a peer or a participant chose (names, keys, hashes, reasons) is
escaped on the server (`html.escape`) and set as text in the browser (`textContent`),
never as markup.
"""

from __future__ import annotations

import html
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from node.accuracy import AccuracyBoard
from node.apispec import KEEP_PARENT
from node.explorer_page import PAGE, SCRIPT
from node.view import NodeView

REFRESH_MS = 3000


def _e(value: object) -> str:
    return html.escape("—" if value is None else str(value), quote=True)


def _short(h: str | None) -> str:
    return "—" if not h else h[:12] + "…"


def who(b: dict[str, Any], aggregates: bool) -> str:
    """Who made a block's global model: its contributors, its proposer (winner), or
    nobody (an averaging rule's round without an aggregate)."""
    if b.get("members"):
        return "contributors " + ", ".join(_short(m) for m in b["members"])
    if aggregates:
        return KEEP_PARENT
    return f"proposer {_short(b.get('proposer'))}"


def block_row(b: dict[str, Any], aggregates: bool = False) -> str:
    ks = ", ".join(str(p["k"]) for p in b.get("proofs", []))
    acc = b.get("accuracy")
    return (
        f'<tr data-round="{_e(b.get("round"))}"><td>{_e(b["height"])}</td>'
        f"<td>{_e(b.get('round'))}</td><td>{_e(who(b, aggregates))}</td>"
        f"<td>{_e(b.get('score'))}</td>"
        f"<td>{_e(ks)}</td><td>{_e(None if acc is None else f'{acc:.3f}')}</td>"
        f"<td>{'final' if b.get('final') else 'canonical'}</td>"
        f'<td title="{_e(b["hash"])}">{_e(_short(b["hash"]))}</td></tr>'
    )


def render(status: dict[str, Any], blocks: list[dict[str, Any]], peers: dict[str, Any]) -> str:
    head, fin = status["head"], status["finalized"]
    aggregates = bool(status.get("aggregates"))
    rows = "\n".join(block_row(b, aggregates) for b in reversed(blocks) if not b.get("genesis"))
    peer_items = "\n".join(
        f"<li>{_e(p.get('peer_id'))} ({_e(p.get('role'))}) "
        f"<code>{_e(' '.join(p.get('addrs') or []))}</code></li>"
        for p in peers.get("peers", [])
    )
    return PAGE.format(
        chain=_e(status["chain_name"]),
        chain_id=_e(status["chain_id"]),
        role=_e(status["role"]),
        head_height=_e(head["height"]),
        head_round=_e(head["round"]),
        head_hash=_e(_short(head["hash"])),
        fin_height=_e(fin["height"]),
        fin_hash=_e(_short(fin["hash"])),
        round=_e(status.get("round")),
        peers=_e(len(peers.get("peers", []))),
        addrs=_e(" ".join(status.get("addrs") or []) or "—"),
        aggregates="1" if aggregates else "0",
        keep_parent=html.escape(KEEP_PARENT),
        rows=rows,
        peer_items=peer_items,
        refresh=REFRESH_MS,
        script=SCRIPT,
    )


CURVE_BLOCKS = 200  # the learning curve covers at most this many recent final blocks


def explorer_routes(view: NodeView, board: AccuracyBoard | None) -> list[Route]:
    """`/` (the page) and `/curve` (its plot's points: the final blocks, which no reorg
    can take back), read-only like the rest."""

    async def accuracies(model_hashes: list[str]) -> list[float | None]:
        """Asked all at once, so a page waits once (node.accuracy's bound), not per block."""
        if board is None:
            return [None] * len(model_hashes)
        hashes = [bytes.fromhex(m) for m in model_hashes]
        blobs = await to_thread.run_sync(lambda: [view.store.get_blob(h) for h in hashes])
        known = [(h, blob) for h, blob in zip(hashes, blobs, strict=True) if blob is not None]
        found = dict(zip((h for h, _ in known), await board.of_many(known), strict=True))
        return [found.get(h) for h in hashes]

    async def curve(request: Request) -> Response:
        final = await to_thread.run_sync(view.finalized_height)
        page = await to_thread.run_sync(view.blocks, max(0, final - CURVE_BLOCKS + 1), final)
        batch = view.genesis.eval_plan.batch_size
        blocks_ = [b for b in page["blocks"] if not b["genesis"]]
        accs = await accuracies([b["model_hash"] for b in blocks_])
        points = [
            {
                "height": b["height"],
                "round": b["round"],
                "score": b["score"],
                "score_share": None if b["score"] is None else b["score"] / batch,
                "members": len(b["members"]),
                "accuracy": acc,
            }
            for b, acc in zip(blocks_, accs, strict=True)
        ]
        return JSONResponse({"batch_size": batch, "finalized": final, "points": points})

    async def page(request: Request) -> Response:
        status = view.status()
        recent = await to_thread.run_sync(view.blocks, None, None)
        blocks_ = recent["blocks"][-30:]
        shown = [b for b in blocks_ if not b["genesis"]]
        for b, acc in zip(shown, await accuracies([b["model_hash"] for b in shown]), strict=True):
            b["accuracy"] = acc
        return HTMLResponse(render(status, blocks_, view.peers()))

    return [Route("/", page), Route("/curve", curve)]
