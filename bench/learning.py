"""Learning benchmark: how well each selection rule learns, in-process, without proofs.

A chain round is simulated with the project's own parts: the dataset split and
partition (prover.data), local training (prover.train.train_local, the testnet's
hyper-parameters), quantisation and the exact fixed-point evaluator the circuit
proves (prover.quant: k on the round's held-out batch, for every model and for the
parent), the selection rules the nodes run (consensus.selection) and the exact
integer aggregate the block carries (consensus.aggregate). A proof would only
confirm the k computed here, so leaving the prover out changes nothing selection
sees. Baselines: FedAvg (float, weighted by shard size, every participant), each
participant training alone (local), and one model on the whole pool (centralised).

Adversaries: `flip` makes ceil(30 %) of the participants (`flip2`: two) train on labels y -> 9-y;
`freerider` adds one participant that resubmits the parent model unchanged
(`freerider-noisy`: the parent with one weight moved by one quantum, so its
commitment differs; that weight is pixel 0's, blank in every digit, so its k is
always the parent's; `freerider-bias`: the parent with the first output bias moved
by one quantum, a weight that matters; `freerider-random`: the parent with every
weight moved by -2..2 quanta at random).

Server steps (a rule's `+` suffixes): `+momentum` runs consensus.optimizer's integer
FedAvgM (beta 7/10, scale 256) on the aggregate, `+guard` the guarded free-rider
filter (consensus.selection.drop_parent_ties); `fedavgm` is float FedAvgM (beta 0.7)
on FedAvg, the baseline for both.

Prints, per setting and rule, the test accuracy at the last round (mean ± sd over
seeds), the share of rounds in which the global model got worse, the mean number of
members, and the free-rider's selection rate against its fair share; writes
bench/results/learning.json.

    .venv/bin/python bench/learning.py                 # the full grid (about 20 min on 2 cores)
    .venv/bin/python bench/learning.py --quick         # 3 seeds, 10 rounds
    .venv/bin/python bench/learning.py --server        # the server-optimizer grid, 40 rounds
    .venv/bin/python bench/learning.py --task mnist-mlp --settings iid:8 dir0.5:8 \
        --batches 16 --rules "best-share(50%)+guard+momentum" fedavg central
                            # the built-in 5,000 MNIST images; writes learning-mnist-mlp.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from consensus.aggregate import weighted_mean
from consensus.optimizer import Momentum, step
from consensus.selection import (
    Candidate,
    Contribution,
    RoundFacts,
    TrimmedMeanParams,
    drop_parent_ties,
    select_best_share,
    select_trimmed_mean,
    select_winner,
)
from prover.data import Dataset, load_dataset, partition, split
from prover.models import build_model, get_arch, model_from_bytes, model_to_bytes
from prover.quant import FixedPoint, accuracy_count, logits, quantise_inputs, quantise_params
from prover.train import train_local

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("digits-mlp", "digits-cnn", "mnist-mlp", "mnist-cnn")  # --task: provable ones
EPOCHS, TRAIN_BATCH, LR = 2, 16, 0.1  # the testnet's hyper-parameters

Selector = Callable[[Sequence[Candidate], RoundFacts], tuple[Contribution, ...]]


def _trimmed(
    spread: int, slack: int, lo: int = 3, keep: int = 100, margin: bool = False
) -> Selector:
    params = TrimmedMeanParams(spread, slack, lo, 64, keep, margin)
    return lambda c, f: select_trimmed_mean(c, f, params)


def rules_for(batch: int) -> dict[str, Selector]:
    """The chain rules compared; spreads and slacks scale with the batch size."""
    q = batch // 4

    def best(c: Sequence[Candidate], f: RoundFacts) -> tuple[Contribution, ...]:
        return select_best_share(c, f, 50, 3, 64)

    return {
        "winner": select_winner,
        "best-share(50%)": best,
        "best-share(60%)": lambda c, f: select_best_share(c, f, 60, 3, 64),
        "best-share(75%)": lambda c, f: select_best_share(c, f, 75, 3, 64),
        f"top-half,parent-slack={q}": _trimmed(batch, q, keep=50),
        f"trimmed(spread={q})": _trimmed(q, batch),
        f"trimmed(spread={q},margin)": _trimmed(q, batch, margin=True),
        "beat-parent": _trimmed(batch, -1, lo=1),
        **{f"best-share(50%)+{mods}": best for mods in ("guard", "momentum", "guard+momentum")},
        # every fresh model a member (the testnets' keep 100%), with the server step
        **{
            f"best-share(100%){mods}": lambda c, f: select_best_share(c, f, 100, 3, 64)
            for mods in ("", "+momentum", "+guard+momentum")
        },
    }


MOMENTUM = Momentum(7, 10, 256)  # what the benchmark's +momentum rows run


@dataclass(frozen=True)
class Case:
    setting: str  # iid | dir0.5 | dir0.1
    n: int
    seed: int
    rule: str  # a chain rule, or fedavg | local | central
    rounds: int
    batch: int
    adversary: str = ""  # "" | flip | freerider | freerider-noisy
    task: str = "digits-mlp"  # the architecture, hence the dataset (mnist: the built-in 5k)


def _flippers(case: Case) -> int:
    """`flip`: ceil(30 %) of the participants flip their labels; `flip2`: two of them."""
    if case.adversary == "flip":
        return math.ceil(0.3 * case.n)
    return 2 if case.adversary == "flip2" else 0


def _alpha(setting: str) -> tuple[str, float]:
    return ("iid", 0.0) if setting == "iid" else ("dirichlet", float(setting[3:]))


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def _q(weights: bytes, fp: FixedPoint, arch: str) -> list[np.ndarray[Any, Any]]:
    return quantise_params(list(model_from_bytes(arch, weights).parameters()), fp.param_scale)


def _from_q(q: list[np.ndarray[Any, Any]], fp: FixedPoint, arch: str) -> bytes:
    model = build_model(arch, 0)
    with torch.no_grad():
        for p, v in zip(model.parameters(), q, strict=True):
            p.copy_(torch.from_numpy(v.astype(np.float64) / (1 << fp.param_scale)))
    return model_to_bytes(model)


@cache
def _structure(arch: str) -> torch.nn.Module:
    """The evaluator reads only the layers, not the weights."""
    return build_model(arch, 0)


def _k(
    q: list[np.ndarray[Any, Any]],
    xq: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    fp: FixedPoint,
    arch: str,
) -> int:
    out, scale = logits(_structure(arch), q, xq, fp)
    return accuracy_count(out, scale, y, fp)


def _test_acc(
    weights: bytes, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], fp: FixedPoint, arch: str
) -> float:
    """Test accuracy of a float model as the chain measures it: quantised, exact evaluator."""
    return _k(_q(weights, fp, arch), quantise_inputs(x, fp.input_scale), y, fp, arch) / len(y)


def _fedavg(
    case: Case,
    data: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    genesis: bytes,
    train: Callable[[bytes, int, int], bytes],
    test_x: np.ndarray[Any, Any],
    test_y: np.ndarray[Any, Any],
    fp: FixedPoint,
) -> dict[str, Any]:
    """FedAvg (float, by shard size); `oracle`: of the honest participants only (the best
    any selection can do); `fedavgm`: with float server momentum 0.7 on its step."""
    who = list(range(_flippers(case) if case.rule == "oracle" else 0, case.n))
    w = genesis
    sizes = np.array([len(data[i][1]) for i in who], dtype=np.float64)
    velocity: list[torch.Tensor] | None = None
    accs: list[float] = []
    for r in range(case.rounds):
        locals_ = [model_from_bytes(case.task, train(w, i, r)) for i in who]
        avg = build_model(case.task, 0)
        with torch.no_grad():
            for j, p in enumerate(avg.parameters()):
                p.copy_(
                    sum(
                        float(s) * list(m.parameters())[j]
                        for s, m in zip(sizes, locals_, strict=True)
                    )
                    / sizes.sum()
                )
            if case.rule == "fedavgm":
                g = list(model_from_bytes(case.task, w).parameters())
                deltas = [a - b for a, b in zip(avg.parameters(), g, strict=True)]
                velocity = (
                    deltas
                    if velocity is None
                    else [0.7 * v + d for v, d in zip(velocity, deltas, strict=True)]
                )
                for p, b, v in zip(avg.parameters(), g, velocity, strict=True):
                    p.copy_(b + v)
        w = model_to_bytes(avg)
        accs.append(_test_acc(w, test_x, test_y, fp, case.task))
    return {"final": accs[-1], "curve": accs}


def _free_ride(
    case: Case, q_global: list[np.ndarray[Any, Any]], r: int
) -> list[np.ndarray[Any, Any]]:
    """The free-rider's submission: the parent, moved as its adversary says."""
    copy = [v.copy() for v in q_global]
    if case.adversary == "freerider-noisy":
        copy[0].flat[0] += 1
    elif case.adversary == "freerider-bias":
        copy[-1].flat[0] += 1
    elif case.adversary == "freerider-random":
        rng = np.random.default_rng(_seed(case.seed, r, 999))
        copy = [v + rng.integers(-2, 3, size=v.shape) for v in copy]
    return copy


def run(case: Case) -> dict[str, Any]:
    torch.set_num_threads(1)
    fp = FixedPoint()
    ds: Dataset = load_dataset(get_arch(case.task).dataset)
    sp = split(
        ds,
        seed=case.seed,
        eval_batch_size=case.batch,
        num_eval_batches=case.rounds,
        test_fraction=0.2,
    )
    scheme, alpha = _alpha(case.setting)
    shards = partition(sp.pool_y, case.n, scheme=scheme, alpha=alpha, seed=case.seed)
    data = [(sp.pool_x[s].reshape(len(s), -1), sp.pool_y[s].copy()) for s in shards]
    for i in range(_flippers(case)):
        data[i] = (data[i][0], 9 - data[i][1])
    test_x, test_y = sp.test_x.reshape(len(sp.test_y), -1), sp.test_y
    test_xq = quantise_inputs(test_x, fp.input_scale)
    genesis = model_to_bytes(build_model(case.task, case.seed))

    def train(weights: bytes, i: int, r: int) -> bytes:
        x, y = data[i]
        return train_local(
            case.task,
            weights,
            x,
            y,
            epochs=EPOCHS,
            batch_size=TRAIN_BATCH,
            lr=LR,
            seed=_seed(case.seed, r, i),
        )

    accs: list[float] = []
    if case.rule == "local":
        models = [genesis] * case.n
        for r in range(case.rounds):
            models = [train(models[i], i, r) for i in range(case.n)]
        honest = range(_flippers(case), case.n)
        accs = [_test_acc(models[i], test_x, test_y, fp, case.task) for i in honest]
        return {"final": statistics.mean(accs)}
    if case.rule == "central":
        x, y = sp.pool_x.reshape(len(sp.pool_y), -1), sp.pool_y
        w = genesis
        for r in range(case.rounds):
            w = train_local(
                case.task,
                w,
                x,
                y,
                epochs=EPOCHS,
                batch_size=TRAIN_BATCH,
                lr=LR,
                seed=_seed(case.seed, r),
            )
            accs.append(_test_acc(w, test_x, test_y, fp, case.task))
        return {"final": accs[-1], "curve": accs}
    if case.rule in ("fedavg", "oracle", "fedavgm"):
        return _fedavg(case, data, genesis, train, test_x, test_y, fp)
    select = rules_for(case.batch)[case.rule]
    mods = set(case.rule.split("+")[1:])
    keys = [bytes([i]) * 32 for i in range(case.n + 1)]
    free = case.n if case.adversary.startswith("freerider") else None
    q_global = _q(genesis, fp, case.task)
    w_global = _from_q(q_global, fp, case.task)
    velocity = [0] * sum(v.size for v in q_global)
    worse = members = free_sel = 0
    prev = _k(q_global, test_xq, test_y, fp, case.task)
    for r in range(case.rounds):
        bx, by = sp.eval_batches[r]
        bxq = quantise_inputs(bx.reshape(len(by), -1), fp.input_scale)
        qs = [_q(train(w_global, i, r), fp, case.task) for i in range(case.n)]
        if free is not None:
            qs.append(_free_ride(case, q_global, r))
        commit = [hashlib.sha256(b"".join(v.tobytes() for v in q)).digest() for q in qs]
        cands = [
            Candidate(keys[i], _k(q, bxq, by, fp, case.task), commit[i]) for i, q in enumerate(qs)
        ]
        parent_commit = hashlib.sha256(b"".join(v.tobytes() for v in q_global)).digest()
        facts = RoundFacts(
            hashlib.sha256(bxq.tobytes()).digest(),
            case.batch,
            _k(q_global, bxq, by, fp, case.task),
            parent_commit,
        )
        chosen = select(cands, facts)
        if "guard" in mods:
            chosen = drop_parent_ties(chosen, cands, facts, 3)
        members += len(chosen)
        if free is not None and any(c.participant == keys[free] for c in chosen):
            free_sel += 1
        if chosen:
            idx = [keys.index(c.participant) for c in chosen]
            flat = [np.concatenate([v.ravel() for v in qs[i]]).tolist() for i in idx]
            mean, _rest = weighted_mean(flat, [c.weight for c in chosen])
            if "momentum" in mods:
                g_flat = np.concatenate([v.ravel() for v in q_global]).tolist()
                mean, velocity = step(g_flat, velocity, mean, MOMENTUM)
            arr, out, at = np.asarray(mean, dtype=np.int64), [], 0
            for v in q_global:
                out.append(arr[at : at + v.size].reshape(v.shape))
                at += v.size
            q_global = out
            w_global = _from_q(q_global, fp, case.task)
        acc = _k(q_global, test_xq, test_y, fp, case.task)
        worse += acc < prev
        prev = acc
        accs.append(acc / len(test_y))
    return {
        "final": accs[-1],
        "curve": accs,
        "worse_share": worse / case.rounds,
        "members": members / case.rounds,
        "freerider_rate": free_sel / case.rounds if free is not None else None,
        "fair_share": members / case.rounds / (case.n + 1) if free is not None else None,
    }


SETTINGS = [
    ("iid", 3, ""),
    ("iid", 8, ""),
    ("dir0.5", 8, ""),
    ("dir0.1", 8, ""),
    ("dir0.5", 8, "flip"),
    ("dir0.5", 8, "flip2"),
    ("dir0.5", 8, "freerider"),
    ("dir0.5", 8, "freerider-noisy"),
]
FOCUS = [("dir0.5", 8, ""), ("dir0.5", 8, "flip")]
# the server-optimizer grid (--server): the settings the issue measured and its rows
SERVER = [
    ("dir0.5", 8, ""),
    ("dir0.1", 8, ""),
    ("dir0.5", 8, "flip"),
    ("dir0.5", 8, "freerider-noisy"),
    ("dir0.5", 8, "freerider-bias"),
    ("dir0.5", 8, "freerider-random"),
]
SERVER_ROWS = [
    "best-share(50%)",
    "best-share(50%)+guard",
    "best-share(50%)+momentum",
    "best-share(50%)+guard+momentum",
    "fedavg",
    "fedavgm",
    "oracle",
]
BASE_BATCH = 16


def _grid(
    seeds: int,
    rounds: int,
    batches: Sequence[int],
    settings: Sequence[tuple[str, int, str]],
    only: Sequence[str] = (),
    task: str = "digits-mlp",
) -> list[Case]:
    """Every setting at the base batch; the two deciding settings at the other batches
    (the pool shrinks as B grows: each round's batch is fresh, taken from the dataset)."""
    cases: list[Case] = []
    for b in batches:
        for setting, n, adv in settings if b == BASE_BATCH else FOCUS:
            rules = list(rules_for(b))
            if not adv.startswith("freerider"):
                rules += ["fedavg", "fedavgm"]
            if adv.startswith("flip"):
                rules.append("oracle")
            if b == BASE_BATCH and not adv.startswith("freerider"):
                rules += ["local", "central"]
            for rule in rules:
                if only and rule not in only:
                    continue
                for s in range(seeds):
                    cases.append(Case(setting, n, s, rule, rounds, b, adv, task))
    return cases


def _label(rule: str, batch: int) -> str:
    """Rules named with their batch-scaled parameters, reported under one row name."""
    names = list(rules_for(batch))
    return list(rules_for(16))[names.index(rule)] if rule in names else rule


def _at(rs: Sequence[dict[str, Any]], rnd: int) -> tuple[float | None, float]:
    """(mean, sd) test accuracy after round `rnd` over the seeds, from their curves."""
    vals = [100 * r["curve"][rnd - 1] for r in rs if len(r.get("curve", ())) >= rnd]
    if not vals:
        return None, 0.0
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _setting(text: str) -> tuple[str, int, str]:
    """SETTING:N[:ADVERSARY], e.g. `dir0.5:8` or `dir0.5:8:flip`."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not (parts[0] == "iid" or parts[0].startswith("dir")):
        raise argparse.ArgumentTypeError(
            f"expected SETTING:N[:ADVERSARY], e.g. iid:8, not {text!r}"
        )
    try:
        _alpha(parts[0])
        n = int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SETTING:N[:ADVERSARY], not {text!r}") from None
    return parts[0], n, parts[2] if len(parts) == 3 else ""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--quick", action="store_true", help="3 seeds, 10 rounds, B=16 only")
    ap.add_argument("--focus", action="store_true", help="only Dirichlet 0.5, honest and flip")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rules", nargs="*", default=[], help="only these rows (names as printed)")
    ap.add_argument("--server", action="store_true", help="the server-optimizer grid, 40 rounds")
    ap.add_argument("--at", type=int, nargs="*", default=[], help="also report these rounds")
    ap.add_argument(
        "--task",
        choices=TASKS,
        default="digits-mlp",
        help="the model and its dataset (mnist-mlp: the built-in 5,000 MNIST images)",
    )
    ap.add_argument(
        "--settings",
        nargs="*",
        type=_setting,
        default=[],
        help="only these settings, as SETTING:N[:ADVERSARY] (e.g. iid:8 dir0.5:8)",
    )
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.batches = 3, 10, [16]
    settings = args.settings or (FOCUS if args.focus else SETTINGS)
    if args.server:
        settings, args.batches = SERVER, [16]
        args.rules = args.rules or SERVER_ROWS
        args.rounds, args.at = max(args.rounds, 40), args.at or [20, 40]
    cases = _grid(args.seeds, args.rounds, args.batches, settings, args.rules, args.task)
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(run, cases, chunksize=1)
    rows: dict[tuple[str, int, str, int, str], list[dict[str, Any]]] = {}
    for case, res in zip(cases, results, strict=True):
        rows.setdefault(
            (case.setting, case.n, case.adversary, case.batch, _label(case.rule, case.batch)), []
        ).append(res)
    table = []
    at_head = "".join(f" {'acc@' + str(r):>12}" for r in args.at)
    print(
        f"{'setting':<28} {'B':>3} {'rule':<31}{at_head} {'acc@R':>12} {'worse':>6} {'members':>7} {'free/fair':>10}"
    )
    for (setting, n, adv, b, rule), rs in rows.items():
        finals = [100 * r["final"] for r in rs]
        row = {
            "setting": setting, "n": n, "adversary": adv, "batch": b, "rule": rule,
            "acc_mean": statistics.mean(finals),
            "acc_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "worse_share": statistics.mean(r.get("worse_share") or 0 for r in rs) if "worse_share" in rs[0] else None,
            "members": statistics.mean(r["members"] for r in rs) if "members" in rs[0] else None,
            "freerider_rate": statistics.mean(r["freerider_rate"] for r in rs) if rs[0].get("freerider_rate") is not None else None,
            "fair_share": statistics.mean(r["fair_share"] for r in rs) if rs[0].get("fair_share") is not None else None,
            "seeds": len(rs),
            "acc_at": {r: _at(rs, r) for r in args.at},
        }  # fmt: skip
        table.append(row)
        name = f"{setting} n={n}" + (f" {adv}" if adv else "")
        worse = f"{100 * row['worse_share']:.0f}%" if row["worse_share"] is not None else "-"
        mem = f"{row['members']:.1f}" if row["members"] is not None else "-"
        free = (
            f"{100 * row['freerider_rate']:.0f}/{100 * row['fair_share']:.0f}%"
            if row["freerider_rate"] is not None
            else "-"
        )
        at_cols = "".join(
            f" {m:>6.1f}±{sd:<5.1f}" if m is not None else f" {'-':>12}"
            for m, sd in row["acc_at"].values()
        )
        print(
            f"{name:<28} {b:>3} {rule:<31}{at_cols} {row['acc_mean']:>6.1f}±{row['acc_sd']:<4.1f} {worse:>6} {mem:>7} {free:>10}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "task": args.task,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "seconds": time.perf_counter() - started,
        "rows": table,
    }
    name = "learning.json" if args.task == "digits-mlp" else f"learning-{args.task}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / name} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
