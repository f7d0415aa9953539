"""Round benchmark: where a ZKPoT round's wall time goes, for 2, 4 and 8 participants.

For each size it writes a fresh local testnet (digits-mlp, eval batch 16), runs every
node as its own OS process, waits for a number of blocks, and reads each node's
per-round step times from its API (`/rounds/{r}`, `times_ms`, ms since the node opened
the round; rounds end as soon as their block is known, docs/protocol.md §4).
Reported per size (medians over the measured rounds):
  train, commit       participant: training, then the weight commitment
  reveal              when the reveal reached the nodes (the commit deadline is fixed)
  prove               participant: reveal -> own proof ready
  verify_last         when a node had verified the last proof of the round
  propose             when the proposer had built and self-validated its block
  propagate           proposer's block -> applied on the slowest node (fetch + full validation)
  block_all           round start -> block applied on every node
  wall                the round's wall time on node 0: its opening to the next round's
  critical            the work the round cannot avoid: the slowest participant's train +
                      commit, the slowest proof, verifying the last proof, one propagation
  ratio               wall / critical (target <= 1.5)
and the peak RSS of each node process (the prover workers are separate processes).
Prints a table and writes bench/results/round.json.

    .venv/bin/python bench/round.py [--sizes 2 4 8] [--blocks 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script: import this checkout, and the test helpers in tests/support (not an
# installed package; pytest finds it through its `pythonpath` option).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))

import psutil

from node.tools.netspec import TestnetSpec
from node.tools.testnet import init
from support.e2e_util import Net, free_base

RESULTS = Path(__file__).resolve().parent / "results"


def _tree_peak_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a node process and its worker children."""
    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    except (psutil.Error, OSError):
        pass
    return total


def run_size(participants: int, blocks: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"zkpot-round-{participants}-")) / "net"
    round_s = 30 + 8 * participants
    spec = TestnetSpec(
        nodes=participants + 1,
        participants=participants,
        task="digits-mlp",
        round_seconds=round_s,  # an upper bound: rounds end when their block is known
        allow_short_rounds=True,  # the same bound as earlier runs, whatever init estimates
        eval_batch=16,
        rounds=blocks + 10,
        start_delay_s=40 + 3 * participants,
        p2p_base_port=free_base(participants + 1),
        api_base_port=free_base(participants + 1),
    )
    init(root, spec)
    net = Net(root, spec)
    nodes = list(range(spec.nodes))
    peaks = dict.fromkeys(nodes, 0.0)
    for i in nodes:
        net.start(i)
    try:
        deadline = time.time() + 120 + (blocks + 3) * round_s * 1.5
        while time.time() < deadline:
            for i in nodes:
                peaks[i] = max(peaks[i], _tree_peak_mb(net.procs[i].pid))
            s = net.status(0)
            if s and s["head"]["height"] >= blocks:
                break
            time.sleep(2)
        time.sleep(3)
        rounds = []
        for h in range(1, blocks + 1):
            blk = net.get(0, f"/blocks/{h}")
            per_node = [net.get(i, f"/rounds/{blk['round']}") for i in nodes]
            nxt = net.client.get(f"{net.api(0)}/rounds/{blk['round'] + 1}")
            next_start = nxt.json()["start_ms"] if nxt.status_code == 200 else None
            rounds.append((blk, per_node, next_start))
    finally:
        net.stop()
    rows = [_breakdown(blk, per_node, nxt) for blk, per_node, nxt in rounds]

    def med(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(vals) / 1000 if vals else None

    out: dict[str, Any] = {"participants": participants, "round_s": round_s, "blocks": len(rows)}
    for key in (
        "train",
        "commit",
        "reveal",
        "prove",
        "verify_last",
        "propose",
        "propagate",
        "block_all",
        "wall",
        "critical",
    ):
        out[key + "_s"] = med(key)
    ratios = [r["wall"] / r["critical"] for r in rows if r.get("wall") and r.get("critical")]
    out["ratio"] = round(statistics.median(ratios), 2) if ratios else None
    out["k"] = [r["k"] for r in rows]
    out["per_round"] = rows
    out["peak_rss_mb_per_node"] = round(max(peaks.values()), 1)
    return out


def _med(values: list[int]) -> float | None:
    return statistics.median(values) if values else None


def _breakdown(
    blk: dict[str, Any], per_node: list[dict[str, Any]], next_start: int | None
) -> dict[str, Any]:
    proposer = blk["proposer"]
    times = [r["times_ms"] for r in per_node]
    mine = next(
        (
            r["times_ms"]
            for r in per_node
            if r["winner"]
            and r["winner"].get("proposer") == proposer
            and "proposed" in r["times_ms"]
        ),
        None,
    )
    part = [t for t in times if "trained" in t]
    verified = [
        max(v for k, v in t.items() if k.startswith("proof_verified"))
        for t in times
        if any(k.startswith("proof_verified") for k in t)
    ]
    blocks = [t["block"] for t in times if "block" in t]
    committed = [t["committed"] for t in part if "committed" in t]
    proving = [t["proved"] - t["revealed"] for t in part if "proved" in t and "revealed" in t]
    proved_last = max((t["proved"] for t in part if "proved" in t), default=None)
    propagate = (max(blocks) - mine["proposed"]) if mine and blocks else None
    critical = None
    if committed and proving and verified and proved_last is not None and propagate is not None:
        verify = max(0, max(verified) - proved_last)
        critical = max(committed) + max(proving) + verify + propagate
    wall = next_start - per_node[0]["start_ms"] if next_start is not None else None
    out: dict[str, Any] = {
        "round": blk["round"],
        "k": blk["score"],
        "times_ms": times,
        "train": _med([t["trained"] for t in part]),
        "commit": _med([t["committed"] - t["trained"] for t in part if "committed" in t]),
        "prove": _med(
            [t["proved"] - t["revealed"] for t in part if "proved" in t and "revealed" in t]
        ),
        "reveal": _med([t["revealed"] for t in times if "revealed" in t]),
        "verify_last": max(verified) if verified else None,
        "propose": mine["proposed"] if mine else None,
        "propagate": propagate,
        "block_all": max(blocks) if blocks else None,
        "wall": wall,
        "critical": critical,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()
    results = [run_size(p, args.blocks) for p in args.sizes]
    cols = [
        "participants",
        "round_s",
        "train_s",
        "commit_s",
        "reveal_s",
        "prove_s",
        "verify_last_s",
        "propose_s",
        "propagate_s",
        "block_all_s",
        "wall_s",
        "critical_s",
        "ratio",
        "peak_rss_mb_per_node",
    ]
    print(" | ".join(cols))
    for r in results:
        print(
            " | ".join(
                "-" if r[c] is None else (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
                for c in cols
            )
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "round.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'round.json'}")


if __name__ == "__main__":
    main()
