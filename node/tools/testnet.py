"""A local testnet: `zkpot testnet init` writes every node's home, `up` runs them.

init: keys, the dataset split (a secret seed: only the publisher's home holds the
held-out batches; everyone else knows their Merkle root from the genesis), each
participant's own training rows (a data file in its home, prover.trainfile), the
circuit artifacts and SRS (test-only), and the genesis.
Node 0 is the publisher (and observes); nodes 1..K are participants; any further
nodes are observers.

(Over 300 lines on purpose: writing a testnet and running it share its layout; the
two halves, `init` and `up`, are each under 150 lines.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from consensus.commitment import UNUSABLE_ROWS
from consensus.crypto import SigningKey, sha256
from consensus.errors import InvalidError
from consensus.merkle import merkle_root
from consensus.rules import check_genesis, check_server
from consensus.types import (
    MAX_REMAINDER,
    AggregationSpec,
    EvalPlan,
    Genesis,
    RuleSpec,
    Task,
    Timing,
    chain_id,
)
from node.apispec import KEEP_PARENT
from node.home import Home, NodeConfig
from node.tools.names import TESTNET_FILE
from node.tools.netspec import (
    AUTO,
    COMMIT_PERCENT,
    FALLBACK_PERCENT,
    MIN_AUTO_ROUND_S,
    PROOF_PERCENT,
    TestnetSpec,
    shortest_round_seconds,
)
from p2p import peer_id_from_seed
from prover import circuit, trainfile
from prover.client import BuildCircuit, DeriveAggregation
from prover.data import load_dataset, partition, split
from prover.jobs import make_eval_batch
from prover.models import get_arch, param_shapes
from prover.train import fresh_seed
from prover.worker import run_once


def timing_for(spec: TestnetSpec, genesis_ms: int) -> Timing:
    """Split a round: the commit window, proving, then fallback ranks (upper bounds all)."""
    r = spec.round_seconds * 1000
    max_rank = min(2, spec.participants)
    return Timing(
        genesis_ms,
        r,
        r * COMMIT_PERCENT // 100,
        r * PROOF_PERCENT // 100,
        r * FALLBACK_PERCENT // 100,
        max_rank,
    )


def init(out: Path, spec: TestnetSpec) -> dict[str, Any]:
    if spec.participants < 1 or spec.nodes < spec.participants + 1:
        raise ValueError(
            "need at least one participant and nodes >= participants + 1 (node 0 publishes)"
        )
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose a new directory")
    if spec.rule != "winner":  # before minutes of circuit building, not after
        try:
            check_server(_rule(spec))
        except InvalidError as exc:
            raise ValueError(str(exc)) from None
    arch = get_arch(spec.task)
    if spec.rule != "winner" and _parameters(spec.task) > MAX_REMAINDER:
        raise ValueError(
            f"--rule {spec.rule} cannot carry {spec.task}: its {_parameters(spec.task)} "
            f"parameters exceed the {MAX_REMAINDER} an averaging rule aggregates (the "
            "block's remainder has one byte per parameter); use --rule winner"
        )
    out.mkdir(parents=True, exist_ok=True)
    keys = [SigningKey.generate() for _ in range(spec.nodes)]
    publisher, participants = keys[0], keys[1 : 1 + spec.participants]

    ds = load_dataset(arch.dataset)
    sp = split(
        ds,
        seed=fresh_seed(),
        eval_batch_size=spec.eval_batch,
        num_eval_batches=spec.rounds,
        test_fraction=0.2,
    )
    data_seed = fresh_seed()
    shards = partition(
        sp.pool_y,
        spec.participants,
        scheme=spec.partition,
        alpha=spec.dirichlet_alpha_ppm / 1e6,
        seed=data_seed,
    )
    shared = out / "_circuit"

    spec = dataclasses.replace(spec, logrows=max(spec.logrows, least_logrows(spec.task)))
    built = run_once(
        BuildCircuit(spec.task, spec.eval_batch, str(shared), 0, spec.logrows, None, grow=True),
        timeout=3600,
        name="init",
    )
    spec = dataclasses.replace(spec, logrows=int(built.manifest["logrows"]))  # as grown
    shortest = shortest_round_seconds(spec, built.prove_ms, built.verify_ms)
    if spec.round_seconds == AUTO:  # the shortest this machine meets, with a floor
        spec = dataclasses.replace(spec, round_seconds=max(MIN_AUTO_ROUND_S, shortest))
    elif spec.round_seconds < shortest and not spec.allow_short_rounds:
        shutil.rmtree(shared)
        raise ValueError(
            f"--round-seconds {spec.round_seconds} is too short for {spec.participants} "
            f"participants on this machine: one proof took {built.prove_ms} ms and one "
            f"verification {built.verify_ms} ms here, and the proof window "
            f"({PROOF_PERCENT} % of a round) must hold every participant's proof and every "
            f"node's verification of it with room to spare; use --round-seconds {shortest} "
            "or more (rounds still end as soon as their block is known), or "
            "--allow-short-rounds to try anyway"
        )
    initial_model = built.initial_model
    manifest = circuit.Manifest.load(shared)
    batches = [
        make_eval_batch(i, x, y, manifest.input_scale) for i, (x, y) in enumerate(sp.eval_batches)
    ]
    test_index = sp.test_index.astype("<i8").tobytes()
    genesis = Genesis(
        chain_name=f"zkpot-testnet-{int(time.time())}",
        timing=timing_for(spec, int(time.time() * 1000) + spec.start_delay_s * 1000),
        finality_depth=spec.finality_depth,
        participants=tuple(sorted(k.public for k in participants)),
        publisher=publisher.public,
        task=Task(
            arch.dataset,
            spec.task,
            spec.local_epochs,
            spec.train_batch_size,
            spec.learning_rate_ppm,
            spec.partition,
            spec.dirichlet_alpha_ppm if spec.partition == "dirichlet" else 0,
            data_seed % 2**63,
        ),
        eval_plan=EvalPlan(
            spec.eval_batch,
            spec.rounds,
            (int(np.prod(arch.input_shape)),),
            manifest.input_scale,
            arch.num_classes,
            merkle_root([b.hash() for b in batches]),
        ),
        circuit=manifest.spec(),
        initial_model_hash=sha256(initial_model),
        **_rule_fields(spec, shared),
        test_index_hash=sha256(test_index),
    )
    check_genesis(genesis)
    addrs = [
        f"/ip4/127.0.0.1/tcp/{spec.p2p_base_port + i}/p2p/{peer_id_from_seed(k.seed)}"
        for i, k in enumerate(keys)
    ]
    for i, key in enumerate(keys):
        home = Home(out / f"node{i}")
        home.path.mkdir()
        home.write_key(key)
        cfg = NodeConfig(
            name=f"node{i}",
            listen=(f"/ip4/127.0.0.1/tcp/{spec.p2p_base_port + i}",),
            bootstrap=tuple(a for j, a in enumerate(addrs) if j != i),
            api_port=spec.api_base_port + i,
        )
        home.config_file.write_text(cfg.to_toml())
        home.genesis_file.write_bytes(genesis.encode())
        home.initial_model_file.write_bytes(initial_model)
        home.artifacts.mkdir()
        for name in (circuit.SETTINGS, circuit.COMPILED, circuit.VK, circuit.SRS, circuit.MANIFEST):
            shutil.copyfile(shared / name, home.artifacts / name)
        home.test_index_file.write_bytes(test_index)
        if key in participants:
            _share_proving_key(shared, home)
            rows = shards[participants.index(key)]  # its own rows, never another's
            trainfile.save(home.data_file, sp.pool_x[rows], sp.pool_y[rows])
        if key is publisher:
            home.write_batches(batches)
    shutil.rmtree(shared)
    summary = {
        "dir": str(out),
        "chain_id": chain_id(genesis).hex(),
        "nodes": spec.nodes,
        "participants": spec.participants,
        "task": spec.task,
        "logrows": spec.logrows,
        "round_seconds": spec.round_seconds,
        "genesis_ms": genesis.timing.genesis_ms,
        "api_ports": [spec.api_base_port + i for i in range(spec.nodes)],
    }
    (out / TESTNET_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def least_logrows(task: str) -> int:
    """The fewest rows, as a power of two, that hold every parameter of the task's model in
    one committed column (and halo2's blinding rows): aggregation commits one column, and a
    smaller circuit spreads the weights over several (mnist-mlp's 25,450 at 2^13 failed the
    build's self-test). 2^11 for digits-mlp, 2^15 for mnist-mlp."""
    return (_parameters(task) + UNUSABLE_ROWS - 1).bit_length()


def _parameters(task: str) -> int:
    return sum(math.prod(shape) for _, shape in param_shapes(task))


VELOCITY_SCALE = 256  # V's resolution: 1/256 of a parameter quantum (bench/learning.py)


def _rule(spec: TestnetSpec) -> RuleSpec:
    momentum = spec.server == "momentum"
    return RuleSpec(
        spec.rule,
        spec.keep_percent,
        spec.min_members,
        spec.max_members,
        exclusion_rounds=spec.exclusion_rounds,
        server=spec.server,
        momentum_num=spec.momentum_permille if momentum else 0,
        momentum_den=1000 if momentum else 1,
        velocity_scale=VELOCITY_SCALE if momentum else 1,
        guard_members=spec.guard_members,
    )


def _rule_fields(spec: TestnetSpec, shared: Path) -> dict[str, Any]:
    """The genesis's rule, and for an averaging rule the circuit's AggregationSpec."""
    if spec.rule == "winner":
        return {}
    job = DeriveAggregation(str(shared), spec.task, UNUSABLE_ROWS)
    aggregation = AggregationSpec.decode(run_once(job, timeout=600, name="init"))
    return {"rule": _rule(spec), "aggregation": aggregation}


def _share_proving_key(shared: Path, home: Home) -> None:
    """Hard-link the proving key init just made into a participant's home: all homes are on
    this machine, so each node need not rebuild it at start (tens of seconds of CPU each,
    all at once). Where a link cannot be made the node rebuilds it from the pinned
    circuit and SRS, as a node of any other network does."""
    with contextlib.suppress(OSError):
        os.link(shared / circuit.PK, home.artifacts / circuit.PK)


# ---------------------------------------------------------------------- up


def _homes(directory: Path) -> list[Home]:
    homes = sorted(
        (Home(p) for p in directory.glob("node*") if p.is_dir()), key=lambda h: int(h.path.name[4:])
    )
    if not homes:
        raise ValueError(
            f"{directory} holds no node homes; run `zkpot testnet init --out {directory}` first"
        )
    return homes


def last_error(log_file: Path) -> str:
    """The line of a node's log that says why it stopped: its last `zkpot:` line, or its
    last line (the end of a traceback names the error)."""
    try:
        with log_file.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError as exc:
        return f"(no log: {exc})"
    lines = [ln for ln in lines if ln]
    said = [ln for ln in lines if ln.startswith("zkpot:")]
    return (said or lines or ["(empty log)"])[-1]


def start_node(home: Home, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`zkpot node start` for one home as its own OS process, logging to HOME/node.log.

    `env` adds to this process's environment (e.g. a test's prover.faults hook).
    """
    with (home.path / "node.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "node.tools.cli", "node", "start", "--home", str(home.path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
        )


def stop_nodes(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 20) -> None:
    """SIGTERM every node (each closes its store cleanly), then kill any that lingers."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _final_line(
    height: int,
    blk: dict[str, Any],
    genesis: Genesis,
    acc: float,
    names: dict[str, str] | None = None,
) -> str:
    """One final block as make testnet prints it: who made the global model, and how good.
    `names`: a testnet's node names by key (hex), so "node2", not a key, is printed."""

    def who(key: str) -> str:
        return (names or {}).get(key) or key[:8]

    k_of = {p["participant"]: p["k"] for p in blk.get("proofs", [])}
    members = blk.get("members") or []
    if members:
        made = "mean of " + ", ".join(f"{who(m)} (k={k_of.get(m, '?')})" for m in members)
        if blk.get("aggregate_hash"):  # v6: the global model is the server step from it
            made = "momentum step from the " + made
    elif genesis.rule.name == "winner":
        made = "the proposer's own model"
    else:
        made = KEEP_PARENT
    batch = genesis.eval_plan.batch_size
    return (
        f"final block {height}: round {blk['round']} by {who(blk['proposer'])}: {made}; "
        f"global model k={blk['score']}/{batch}, test accuracy {acc:.3f}"
    )


def up(directory: Path, rounds: int, *, timeout_s: float, out: Any = None) -> int:
    """Run every node as its own OS process until `rounds` blocks are final everywhere.

    Returns 0 only if every node reports the same finalized block at that height.
    """
    import httpx

    from prover.train import evaluate_float

    say = out or sys.stdout
    homes = _homes(directory)
    genesis = homes[0].load_genesis()
    names = {h.load_key().public.hex(): h.path.name for h in homes}
    configs = [h.load_config() for h in homes]
    apis = [f"http://{c.api_host}:{c.api_port}" for c in configs]
    ds = load_dataset(genesis.task.dataset)
    test_idx = np.frombuffer(homes[0].test_index_file.read_bytes(), dtype="<i8")
    tx, ty = ds.x[test_idx].reshape(len(test_idx), -1), ds.y[test_idx]
    late = (time.time() * 1000 - genesis.timing.genesis_ms) / genesis.timing.round_ms
    if late > 1:
        print(
            f"note: genesis was {late:.1f} rounds ago; the rounds already past are skipped",
            file=say,
        )
    procs = [start_node(h) for h in homes]
    print(
        f"started {len(procs)} nodes (logs in {directory}/node*/node.log); waiting for {rounds} final blocks",
        file=say,
    )
    initial_acc = evaluate_float(
        genesis.task.architecture, homes[0].initial_model_file.read_bytes(), tx, ty
    )
    print(f"genesis model: test accuracy {initial_acc:.3f}", file=say, flush=True)
    print(f"explorer: {apis[0]}/  (every node serves one)", file=say, flush=True)
    curve: list[tuple[int, float, float]] = []  # (round, test accuracy, k / batch)
    last_line = ""
    deadline = time.time() + timeout_s
    reported = 0
    final: list[str | None] = [None] * len(homes)
    code = 1
    try:
        with httpx.Client(timeout=5.0) as client:
            while time.time() < deadline:
                time.sleep(2)
                statuses: list[dict[str, Any] | None] = []
                for api in apis:
                    try:
                        statuses.append(client.get(f"{api}/status").json())
                    except (httpx.HTTPError, ValueError):
                        statuses.append(None)
                for i, p in enumerate(procs):
                    if p.poll() is not None:
                        log_file = homes[i].path / "node.log"
                        print(
                            f"node{i} exited with code {p.returncode}: {last_error(log_file)} "
                            f"(all of it in {log_file})",
                            file=say,
                        )
                        return 1
                live = [s for s in statuses if s]
                if not live:
                    continue
                fin = min(s["finalized"]["height"] for s in live) if len(live) == len(apis) else 0
                while reported < min(fin, rounds):
                    reported += 1
                    blk = client.get(f"{apis[0]}/blocks/{reported}").json()
                    model = client.get(f"{apis[0]}/models/{reported}").content
                    acc = evaluate_float(genesis.task.architecture, model, tx, ty)
                    line = _final_line(reported, blk, genesis, acc, names)
                    print(line, file=say, flush=True)
                    curve.append((blk["round"], acc, blk["score"] / genesis.eval_plan.batch_size))
                head = live[0]["head"]
                line = (
                    f"  round {live[0].get('round')}: head height {head['height']} score {head['score']}, "
                    f"finalized {fin}, nodes up {len(live)}/{len(apis)}, peers {[s['peers'] for s in live]}"
                )
                if line != last_line:
                    print(line, file=say, flush=True)
                    last_line = line
                if fin >= rounds:
                    for i, api in enumerate(apis):
                        final[i] = client.get(f"{api}/blocks/{rounds}").json()["hash"]
                    same = len(set(final)) == 1
                    print(
                        f"{rounds} final blocks on every node; final block {rounds} is "
                        + ("the same on all nodes" if same else f"DIFFERENT: {final}"),
                        file=say,
                    )
                    code = 0 if same else 1
                    _plot(directory / "learning-curve.png", initial_acc, curve, say)
                    return code
            print(f"timed out after {timeout_s:.0f} s", file=say)
            return 1
    finally:
        stop_nodes(procs)


def _plot(path: Path, initial: float, curve: list[tuple[int, float, float]], say: Any) -> None:
    """The final blocks' test accuracy and proven score per round, as a PNG beside the logs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("(no learning-curve.png: install matplotlib, `pip install zkpot[plot]`)", file=say)
        return
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    rounds = [r for r, _, _ in curve]
    ax.plot([-1, *rounds], [initial, *(a for _, a, _ in curve)], "o-", label="test accuracy")
    ax.plot(rounds, [k for _, _, k in curve], "s--", label="proven score k / batch")
    ax.set_xlabel("round (-1: the genesis model)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("global model of each final block")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"learning curve: {path}", file=say)
