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

Then the private aggregation's own cost (protocol v4, best-share) per member count
(`--members`, default 3 8 16), measured in-process on a freshly built circuit of each
`--agg-tasks` architecture (default digits-mlp) with the worker's real functions (prover.aggregation) and canonical encodings:
  msgs                messages one member sends (MaskedUpdate, Unmask) and the
                      aggregator's own (Selection, Complete)
  member_kb           bytes one member gossips; round_kb: every message of the round
  mask_s              one member's masking (its pairwise and self masks, their commitments)
  check_s             the aggregator's per-member checks, all members, one core
  aggregate_s         unmasking, the exact mean and its commitment check
  added_s             what the aggregation adds to the round's critical path on 2 cores:
                      mask_s + check_s / 2 + aggregate_s + 3 gossip hops (0.1 s each)
  share               added_s / (the measured critical path + added_s), when a network
                      of that size was measured above (target <= 10 %)
and dropout recovery's (protocol v5): t (shares that recover a seed), share_b (bytes
the sharing adds to each update), share_s (dealing them), dropout_msgs / dropout_kb
(the SeedShares one silent member costs), open_s, relay_s, interp_s and recover_s
(the compute to recover it, after the members' grace of fallback/2; _recovery_cost).
Prints the tables and writes bench/results/round.json.

    .venv/bin/python bench/round.py [--sizes 2 4 8] [--blocks 3] [--members 3 8 16]
        [--agg-tasks digits-mlp mnist-mlp mnist-cnn]   (--sizes with no value: no testnet)
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

# Run as a script: import this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from node.tools.localnet import LocalNet, free_base
from node.tools.netspec import TestnetSpec
from node.tools.testnet import init

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
        p2p_base_port=(base := free_base(2 * (participants + 1))),
        api_base_port=base + participants + 1,
    )
    init(root, spec)
    net = LocalNet(root, spec)
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


GOSSIP_HOP_S = 0.1


def aggregation_cost(members: list[int], arch: str = "digits-mlp") -> list[dict[str, Any]]:
    """The aggregation's messages, bytes and seconds per member count (see the docstring);
    a vector above one message goes in parts (v7): `parts` messages per update."""
    import os

    from consensus import masking, secagg
    from consensus.secagg import Complete, Selection, Unmask
    from node.tools.testnet import least_logrows
    from prover import aggregation, jobs
    from prover.models import build_model, model_to_bytes

    artifacts = tempfile.mkdtemp(prefix="zkpot-agg-")
    jobs.build_circuit(arch, 1, artifacts, 1, max(14, least_logrows(arch)), None, grow=True)
    out = []
    for n in members:
        keys = sorted(os.urandom(32) for _ in range(n))
        secrets = {k: secagg.mask_secret(os.urandom(32)) for k in keys}
        publics = {k: secagg.mask_public(s) for k, s in secrets.items()}
        weights = {k: model_to_bytes(build_model(arch, i + 1)) for i, k in enumerate(keys)}
        commits = {k: jobs.commit(artifacts, arch, w) for k, w in weights.items()}
        sel = Selection(0, bytes(32), keys[0], 0, tuple(sorted(keys)), tuple(keys))
        h = sel.hash()
        updates, mask_s = [], []
        for k in keys:
            others = tuple((o, publics[o]) for o in keys if o != k)
            t = time.perf_counter()
            whole = aggregation.mask_update(
                artifacts, arch, weights[k], 1, secrets[k], k, others, h, secagg.threshold(3, n)
            )
            upd, rest = secagg.split_update(whole)
            mask_s.append(time.perf_counter() - t)
            updates.append((upd, rest))
        t = time.perf_counter()
        for k, (upd, rest) in zip(keys, updates, strict=True):
            signs = tuple(masking.pair_sign(k, o) for o in keys if o != k)
            assert aggregation.check_update(artifacts, arch, commits[k], 1, upd, signs, rest)
        check_s = time.perf_counter() - t
        seeds = [masking.self_seed(secrets[k].to_bytes(32, "big"), h) for k in keys]
        t = time.perf_counter()
        blob, rest = aggregation.aggregate(
            artifacts,
            arch,
            keys,
            [secagg.whole_vector(u, r) for u, r in updates],
            seeds,
            [u.self_commitment for u, _ in updates],
            n,
        )
        aggregation.commit_aggregate(artifacts, arch, blob, rest, n)
        aggregate_s = time.perf_counter() - t
        heads = [u for u, _ in updates]
        recovery = _recovery_cost(keys, secrets, publics, heads, sel)
        comp = Complete(h, tuple(u.hash() for u in heads))
        unmask = Unmask(h, keys[0], seeds[0])
        first, first_rest = updates[0]
        sent = [first, *secagg.vector_parts(first, first_rest), unmask]
        member_b = sum(len(m.encode()) for m in sent)
        round_b = n * member_b + len(sel.encode()) + len(comp.encode())
        mask = statistics.median(mask_s)
        added = mask + check_s / 2 + aggregate_s + 3 * GOSSIP_HOP_S
        out.append(
            {
                "arch": arch,
                "parameters": len(secagg.whole_vector(first, first_rest)) // secagg.FIELD_BYTES,
                "members": n,
                "msgs": f"{len(sent)} each + 2",
                "max_msg_kb": round(max(len(m.encode()) for m in sent) / 1024, 1),
                "member_kb": round(member_b / 1024, 1),
                "round_kb": round(round_b / 1024, 1),
                "mask_s": round(mask, 3),
                "check_s": round(check_s, 3),
                "aggregate_s": round(aggregate_s, 3),
                "added_s": round(added, 3),
                **recovery,
            }
        )
    return out


def _recovery_cost(
    keys: list[bytes],
    secrets: dict[bytes, int],
    publics: dict[bytes, bytes],
    updates: list[Any],
    sel: Any,
) -> dict[str, Any]:
    """Protocol v5's dropout recovery for one selection: what the seed sharing adds to
    every update (bytes; `share_s`: dealing t_S Feldman commitments and S - 1 sealed
    shares, on top of the shared points masking computes anyway), and what recovering
    one silent member costs: each survivor opens and checks its share (`open_s`, in
    parallel on the survivors' nodes), every node checks the t_S shares it relays
    (`relay_s`) and the aggregator interpolates (`interp_s`); `recover_s` is their sum
    plus one gossip hop, after the members' grace of fallback/2."""
    from consensus import bn254, masking, secagg, shamir

    n = len(keys)
    t = secagg.threshold(3, n)
    h = sel.hash()
    dealer = keys[0]
    others = [k for k in keys if k != dealer]
    points = [masking.shared_point(secrets[dealer], bn254.decompress(publics[o])) for o in others]
    start = time.perf_counter()
    seed = masking.self_seed(secrets[dealer].to_bytes(32, "big"), h)
    coeffs = shamir.coefficients(int.from_bytes(seed, "big"), seed, t)
    shamir.commitments(coeffs)
    for o, pt in zip(others, points, strict=True):
        secagg.seal_share(pt, h, dealer, o, shamir.share(coeffs, secagg.share_x(keys, o)))
    share_s = time.perf_counter() - start
    upd = updates[0]
    sealed = dict(zip(others, upd.seed_shares, strict=True))
    start = time.perf_counter()
    holder = others[0]
    value = secagg.open_share(secrets[holder], holder, dealer, publics[dealer], h, sealed[holder])
    assert secagg.share_holds(upd, keys, holder, value)
    open_s = time.perf_counter() - start
    shares = {}
    for o in others[:t]:
        shares[o] = secagg.open_share(secrets[o], o, dealer, publics[dealer], h, sealed[o])
    start = time.perf_counter()
    for o, v in shares.items():
        assert secagg.share_holds(upd, keys, o, v)
    relay_s = time.perf_counter() - start
    start = time.perf_counter()
    got = secagg.recover_seed({secagg.share_x(keys, o): v for o, v in shares.items()})
    interp_s = time.perf_counter() - start
    assert got == masking.self_seed(secrets[dealer].to_bytes(32, "big"), h)
    share_msg = secagg.SeedShare(h, holder, dealer, upd.hash(), value.to_bytes(32, "big"))
    return {
        "t": t,
        "share_b": 32 * (t + n - 1),
        "share_s": round(share_s, 3),
        "dropout_msgs": n - 1,
        "dropout_kb": round((n - 1) * len(share_msg.encode()) / 1024, 1),
        "open_s": round(open_s, 3),
        "relay_s": round(relay_s, 3),
        "interp_s": round(interp_s, 4),
        "recover_s": round(open_s + relay_s + interp_s + GOSSIP_HOP_S, 3),
    }


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    print(" | ".join(cols))
    for r in rows:
        print(
            " | ".join(
                "-"
                if r.get(c) is None
                else (f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
                for c in cols
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2, 4, 8])
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--members", type=int, nargs="*", default=[3, 8, 16])
    parser.add_argument(
        "--agg-tasks",
        nargs="*",
        default=["digits-mlp"],
        help="architectures whose aggregation cost to measure (mnist-mlp's vector is 2 parts)",
    )
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
    _table(results, cols)
    agg = [row for arch in args.agg_tasks for row in aggregation_cost(args.members, arch)]
    critical = {r["participants"]: r["critical_s"] for r in results if r.get("critical_s")}
    for a in agg:
        c = critical.get(a["members"]) if a["arch"] == "digits-mlp" else None
        a["share"] = None if c is None else round(a["added_s"] / (c + a["added_s"]), 3)
    print()
    _table(
        agg,
        [
            "arch",
            "parameters",
            "members",
            "msgs",
            "max_msg_kb",
            "member_kb",
            "round_kb",
            "mask_s",
            "check_s",
            "aggregate_s",
            "added_s",
            "share",
        ],
    )
    print()
    _table(
        agg,
        [
            "arch",
            "members",
            "t",
            "share_b",
            "share_s",
            "dropout_msgs",
            "dropout_kb",
            "open_s",
            "relay_s",
            "interp_s",
            "recover_s",
        ],
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "round.json").write_text(
        json.dumps({"rounds": results, "aggregation": agg}, indent=2)
    )
    print(f"wrote {RESULTS / 'round.json'}")


if __name__ == "__main__":
    main()
