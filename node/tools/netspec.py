"""The shape of a local testnet, and the CLI flags that describe it.

Kept free of heavy imports: `zkpot testnet init` and `zkpot testnet compose` both
take these flags, and the CLI registers them at start-up.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from node.apispec import DEFAULT_API_PORT

P2P_BASE_PORT = 27100
# The share of a round each phase may take at most (testnet.timing_for) and the headroom a
# testnet's proof window keeps over the work measured at init.
COMMIT_PERCENT, PROOF_PERCENT, FALLBACK_PERCENT = 25, 45, 12
PROOF_HEADROOM_PERCENT = 125
AUTO = 0  # --round-seconds auto: init picks the shortest this machine meets
MIN_AUTO_ROUND_S = 24


@dataclass(frozen=True)
class TestnetSpec:
    __test__ = False  # not a pytest test class
    nodes: int = 4
    participants: int = 3
    task: str = "digits-mlp"
    round_seconds: int = AUTO
    eval_batch: int = 16
    rounds: int = 40
    # at least: init grows it to hold the model's weights in one column (testnet.least_logrows)
    # and the circuit's rows in a few (prover.circuit.fold_logrows)
    logrows: int = 13
    start_delay_s: int = 45
    # 2, not 1: two proposers of one round (a fallback rank whose clock opened the round
    # earlier) can each see their own block first; with depth 1 each would finalize its
    # own side at once and the network would split for good (seen in the e2e tests)
    finality_depth: int = 2
    local_epochs: int = 2
    learning_rate_ppm: int = 100_000
    train_batch_size: int = 16
    partition: str = "iid"  # how the training pool is shared: iid | dirichlet
    dirichlet_alpha_ppm: int = 500_000  # dirichlet only: label skew (smaller: more skewed)
    p2p_base_port: int = P2P_BASE_PORT
    api_base_port: int = DEFAULT_API_PORT  # node0's; node I serves on this + I
    allow_short_rounds: bool = False  # skip init's check against the measured proving time
    rule: str = "best-share"  # consensus.strategy's name: best-share (v2) | winner (v1)
    keep_percent: int = 50  # best-share: the best half of the fresh proofs ...
    min_members: int = 3  # ... never fewer than 3 (privacy) ...
    max_members: int = 16  # ... nor more than 16
    exclusion_rounds: int = 8  # a participant proven to misbehave is left out this long (v5)
    server: str = "momentum"  # v6: the server step on each aggregate: momentum | none
    momentum_permille: int = 700  # momentum: beta = 0.7 (bench/learning.py --server)
    guard_members: int = 3  # v6: the free-rider guard keeps at least this many (0: off)


def shortest_round_seconds(spec: TestnetSpec, prove_ms: int, verify_ms: int) -> int:
    """The shortest round a testnet of `spec` meets on this machine, from one measured proof.

    Every node of a local testnet shares the machine's cores and ezkl uses them all, so
    the proof window must hold every participant's proof one after another plus every
    node's verification of each, with headroom for the rest of the node's work.
    """
    work_ms = spec.participants * prove_ms + spec.participants * spec.nodes * verify_ms
    proof_ms = work_ms * PROOF_HEADROOM_PERCENT // 100
    return -(-proof_ms * 100 // (PROOF_PERCENT * 1000))


def add_network_args(p: argparse.ArgumentParser, defaults: TestnetSpec) -> None:
    """The network flags of `testnet init` and `testnet compose`, with their defaults."""
    p.add_argument(
        "--nodes",
        type=int,
        default=defaults.nodes,
        help="nodes in all: node0 publishes (and observes), the next --participants train",
    )
    p.add_argument(
        "--participants",
        type=int,
        default=defaults.participants,
        help="how many of the nodes train, prove and propose (the rest observe)",
    )
    p.add_argument(
        "--task",
        default=defaults.task,
        help="dataset and architecture (digits-mlp, digits-mlp-tiny, ...; prover.models)",
    )
    p.add_argument(
        "--round-seconds",
        type=_round_seconds,
        default=defaults.round_seconds,
        help="the longest a round lasts (it ends as soon as its block is known); "
        "'auto' (the default for init): the shortest init measures this machine meets",
    )
    p.add_argument(
        "--allow-short-rounds",
        action="store_true",
        help="accept a round length shorter than init measures this machine can meet",
    )
    p.add_argument(
        "--eval-batch",
        type=int,
        default=defaults.eval_batch,
        help="examples in each round's held-out batch (the k a proof claims is out of these)",
    )
    p.add_argument(
        "--rule",
        choices=("winner", "best-share"),
        default=defaults.rule,
        help="how a round's proven models make the next global model (winner: the best "
        "model alone; best-share: the private average of the best share of them)",
    )
    p.add_argument(
        "--keep-percent",
        type=int,
        default=defaults.keep_percent,
        help="best-share: average the best this percent of the round's fresh proofs",
    )
    p.add_argument(
        "--min-members",
        type=int,
        default=defaults.min_members,
        help="best-share: no aggregate of fewer (at least 3: privacy)",
    )
    p.add_argument(
        "--max-members",
        type=int,
        default=defaults.max_members,
        help="best-share: no aggregate of more",
    )
    p.add_argument(
        "--exclusion-rounds",
        type=int,
        default=defaults.exclusion_rounds,
        help="rounds a participant proven (by evidence on chain) to misbehave is left out "
        "of every selection (0: evidence is not carried)",
    )
    p.add_argument(
        "--server",
        choices=("momentum", "none"),
        default=defaults.server,
        help="the server step on each round's aggregate (momentum: FedAvgM in integers on "
        "chain; none: the aggregate is the next global model)",
    )
    p.add_argument(
        "--momentum",
        type=_momentum,
        default=defaults.momentum_permille / 1000,
        help="the server momentum beta (with --server momentum), in [0, 1)",
    )
    p.add_argument(
        "--guard-members",
        type=int,
        default=defaults.guard_members,
        help="leave selected models that score exactly the parent's k out of the aggregate "
        "while more than this many members remain (a free-rider's resubmitted parent; "
        "0: off; at least --min-members otherwise)",
    )
    p.add_argument(
        "--partition",
        choices=("iid", "dirichlet"),
        default=defaults.partition,
        help="how participants' training data is split (dirichlet: label skew, non-IID)",
    )
    p.add_argument(
        "--alpha",
        type=_positive_float,
        default=defaults.dirichlet_alpha_ppm / 1e6,
        help="Dirichlet concentration (with --partition dirichlet; smaller is more skewed)",
    )
    p.add_argument(
        "--local-epochs",
        type=int,
        default=defaults.local_epochs,
        help="passes over its own data a participant trains each round",
    )
    p.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=defaults.learning_rate_ppm / 1e6,
        help="local training's SGD learning rate",
    )
    p.add_argument(
        "--train-batch-size",
        type=int,
        default=defaults.train_batch_size,
        help="local training's minibatch size",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=defaults.rounds,
        help="held-out batches, i.e. rounds the chain can run",
    )
    p.add_argument(
        "--logrows",
        type=int,
        default=defaults.logrows,
        help="the circuit's least size, 2^logrows rows (larger: slower proofs, more room); "
        "init grows it to hold the model's parameters in one column (mnist-mlp: 15) and its "
        "rows in four (mnist-cnn at B=16: 15)",
    )
    p.add_argument(
        "--start-delay",
        type=int,
        default=defaults.start_delay_s,
        help="seconds from init until round 0 starts",
    )
    p.add_argument(
        "--p2p-port",
        type=int,
        default=defaults.p2p_base_port,
        help="first node's p2p port (others follow)",
    )
    p.add_argument(
        "--api-port",
        type=int,
        default=defaults.api_base_port,
        help="first node's API port (others follow)",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _momentum(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1 or round(value * 1000) >= 1000:
        raise argparse.ArgumentTypeError(f"the momentum must be at least 0 and below 1, not {text}")
    return value


def _round_seconds(text: str) -> int:
    if text == "auto":
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("a round lasts at least 1 second")
    return value


def network_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TestnetSpec fields from the flags `add_network_args` added."""
    return {
        "nodes": args.nodes,
        "participants": args.participants,
        "task": args.task,
        "round_seconds": args.round_seconds,
        "partition": args.partition,
        "dirichlet_alpha_ppm": round(args.alpha * 1e6),
        "local_epochs": args.local_epochs,
        "learning_rate_ppm": round(args.learning_rate * 1e6),
        "train_batch_size": args.train_batch_size,
        "allow_short_rounds": args.allow_short_rounds,
        "rule": args.rule,
        "keep_percent": args.keep_percent,
        "min_members": args.min_members,
        "max_members": args.max_members,
        "exclusion_rounds": args.exclusion_rounds,
        "server": args.server,
        "momentum_permille": round(args.momentum * 1000),
        "guard_members": args.guard_members,
        "eval_batch": args.eval_batch,
        "rounds": args.rounds,
        "logrows": args.logrows,
        "start_delay_s": args.start_delay,
        "p2p_base_port": args.p2p_port,
        "api_base_port": args.api_port,
    }
