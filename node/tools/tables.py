"""Tables for people from the node API's JSON: what `zkpot status`, `chain` and `peers` print.

Hex ids are shortened in tables; `--json` and the detail views keep them whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Names = Mapping[str, str]  # key hex or peer id -> a testnet node's name (node.tools.names)


def short(value: object, n: int = 16) -> str:
    """Hex ids shortened for tables; the full value is in --json and the detail views."""
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= n else text[:n]


def who(value: object, names: Names | None, n: int = 16) -> str:
    """A key or peer id as its testnet node's name when known, else shortened."""
    if names and isinstance(value, str) and value in names:
        return names[value]
    return short(value, n)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    return "\n".join(line.rstrip() for line in lines)


def pairs(items: Sequence[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in items)


def _accuracy(ppm: object) -> str:
    return "-" if not isinstance(ppm, int) else f"{ppm / 10_000:.2f}%"


def format_status(s: dict[str, Any]) -> str:
    head, fin = s["head"], s["finalized"]
    rnd = s.get("round")
    round_text = "not started" if rnd is None else f"{rnd} of {s['rounds_total']}"
    return pairs(
        [
            ("chain", f"{s['chain_name']} ({s['chain_id']})"),
            ("task", s.get("task")),
            ("node", f"{s.get('name') or '-'}: {s['peer_id']} ({s['role']})"),
            ("addrs", " ".join(s.get("addrs") or []) or "-"),
            (
                "head",
                f"height {head['height']}, round {_cell(head['round'])}, score {head['score']}",
            ),
            ("head hash", head["hash"]),
            ("finalized", f"height {fin['height']}, {fin['hash']}"),
            ("round", round_text),
            ("sync", _sync_text(s.get("sync") or {}) if s["peers"] else _alone()),
            ("peers", s["peers"]),
        ]
    )


def _alone() -> str:
    return "no peers connected: not following the chain (are the bootstrap peers up?)"


def _sync_text(sync: dict[str, Any]) -> str:
    height, peer = sync.get("height"), sync.get("peer_height")
    if not sync.get("catching_up"):
        return f"following (height {height}, peers at {peer})"
    rate, eta = sync.get("blocks_per_s") or 0, sync.get("eta_s")
    eta_text = "ETA unknown" if eta is None else f"ETA {_duration(eta)}"
    return f"catching up: height {height} of {peer}, {rate:.1f} blocks/s, {eta_text}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    return (
        f"{s // 3600} h {s % 3600 // 60:02d} min"
        if s >= 3600
        else (f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s")
    )


def format_block(b: dict[str, Any], names: Names | None = None) -> str:
    items: list[tuple[str, object]] = [
        ("height", b["height"]),
        ("hash", b["hash"]),
        ("parent", b["parent"]),
    ]
    if b.get("genesis"):
        items += [("genesis", "yes"), ("initial model", b["model_hash"])]
        return pairs(items)
    status = "final" if b["final"] else ("canonical" if b["canonical"] else "not canonical")
    items += [
        ("round", b["round"]),
        ("status", status),
        ("proposer", f"{_named(b['proposer'], names)} (rank {b['rank']})"),
        ("score", f"{_cell(b['score'])} (cumulative {b['cumulative_score']})"),
        ("batch", b["batch_index"]),
        ("model", b["model_hash"]),
    ]
    out = [pairs(items), ""]
    proofs = {p["commit_id"]: p["k"] for p in b["proofs"]}
    members = set(b.get("members") or [])
    out.append(
        table(
            ["commit", "participant", "k", "member"],
            [
                [
                    short(c["id"]),
                    who(c["participant"], names),
                    proofs.get(c["id"]),
                    "yes" if c["participant"] in members else "",
                ]
                for c in b["commits"]
            ],
        )
    )
    return "\n".join(out)


def format_blocks(page: dict[str, Any], names: Names | None = None) -> str:
    rows = [
        [
            b["height"],
            b["round"],
            short(b["hash"]),
            who(b["proposer"], names),
            b["rank"],
            len(b.get("members") or []),
            b["score"],
            b["cumulative_score"],
            "final" if b["final"] else "",
        ]
        for b in page["blocks"]
    ]
    headers = ["height", "round", "hash", "proposer", "rank", "members", "k", "cum", "final"]
    return table(headers, rows) if rows else "(no blocks in that range)"


def format_round(r: dict[str, Any], names: Names | None = None) -> str:
    reveal = r["reveal"]
    winner = r.get("winner") or {}
    block = r.get("block")
    items: list[tuple[str, object]] = [
        ("round", r["round"]),
        ("observed", r["observed"]),
        ("revealed", f"batch {reveal['batch_index']}" if reveal["revealed"] else "no"),
        ("sealed commits", len(reveal["sealed"])),
        ("winner", _named(winner.get("proposer"), names)),
        ("winner block", winner.get("block")),
        (
            "canonical block",
            None if block is None else f"height {block['height']}, {block['hash']}",
        ),
        (
            "accuracy",
            "measuring" if r.get("accuracy_pending") else _accuracy(r.get("accuracy_ppm")),
        ),
    ]
    out = [pairs(items)]
    if r["proofs"] or r["commits"]:
        proofs = {p["commit_id"]: p for p in r["proofs"]}
        rank = {x["participant"]: x["rank"] for x in r["ranking"]}
        rows = []
        for c in r["commits"]:
            p = proofs.pop(c["id"], None)
            rows.append(_proof_row(c["id"], c["participant"], p, rank, names))
        rows += [
            _proof_row(commit_id, p["participant"], p, rank, names)
            for commit_id, p in proofs.items()
        ]
        out += ["", table(["commit", "participant", "k", "valid", "rank", "reason"], rows)]
    for note in r.get("notes", []):
        out.append(f"note: {note}")
    return "\n".join(out)


def _proof_row(
    commit_id: str,
    participant: str,
    p: dict[str, Any] | None,
    rank: dict[str, int],
    names: Names | None,
) -> list[object]:
    name = who(participant, names)
    if p is None:
        return [short(commit_id), name, "no proof", None, None, None]
    valid = {True: "valid", False: "INVALID", None: "pending"}[p["valid"]]
    return [short(commit_id), name, p["k"], valid, rank.get(participant), p["reason"]]


def format_peers(p: dict[str, Any], names: Names | None = None) -> str:
    peers: list[dict[str, Any]] = p["peers"]
    if not peers:
        return "(no peers connected)"
    if names and any(str(peer.get("peer_id")) in names for peer in peers):
        peers = [{"name": names.get(str(peer.get("peer_id")), "-"), **peer} for peer in peers]
    headers: list[str] = []
    for peer in peers:
        headers += [k for k in peer if k not in headers]

    def cell(v: Any) -> Any:
        return " ".join(str(x) for x in v) if isinstance(v, list) else v

    return table(headers, [[cell(peer.get(h)) for h in headers] for peer in peers])


def _tenure_now(t: dict[str, Any], rnd: int) -> str:
    if t["active"]:
        return "participant" if t["left"] is None else f"participant (leaves in round {t['left']})"
    if t["joined"] > rnd:
        return f"joins in round {t['joined']}"
    return f"left in round {t['left']}"


def format_participants(p: dict[str, Any], names: Names | None = None) -> str:
    """Keys stay whole (`participant admit KEY` takes one); a testnet's names go beside."""
    rows = [
        (_named(t["key"], names), t["joined"], _cell(t["left"]), _tenure_now(t, p["round"]))
        for t in p["participants"]
    ]
    out = [f"round {p['round']}; publisher {_named(p['publisher'], names)}", ""]
    out.append(table(("key", "joined", "left", "now"), rows))
    if p["pending"]:
        out += ["", "pending changes (waiting for a block):"]
        changes = [(c["kind"], _named(c["key"], names), c["from_round"]) for c in p["pending"]]
        out.append(table(("kind", "key", "from round"), changes))
    if p["requests"]:
        out += ["", "join requests (the publisher admits one with `zkpot participant admit KEY`):"]
        out += [f"  {_named(r['key'], names)}" for r in p["requests"]]
    return "\n".join(out)


def _named(key: object, names: Names | None) -> object:
    """A whole key, with its testnet node's name in front when known."""
    if names and isinstance(key, str) and key in names:
        return f"{names[key]} {key}"
    return key
