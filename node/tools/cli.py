"""The `zkpot` command line.

Subcommands for running nodes and testnets, inspecting a running node through its
API, building circuit artifacts and checking genesis files and stores.
(Over 300 lines: the whole argument tree in one place, so `zkpot --help` and the
subcommands read as one; each subcommand's work lives in its own module.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from consensus import rules
from consensus.errors import ConsensusError
from consensus.types import Genesis
from node.apispec import DEFAULT_API_HOST, DEFAULT_API_PORT
from node.tools.client import add_client_commands
from node.tools.compose import add_compose_commands
from node.tools.netspec import TestnetSpec, add_network_args, network_kwargs
from node.tools.participants import add_participant_commands
from storage import ChainStore, StoreError


def _print_summary(summary: dict[str, Any], as_json: bool, width: int) -> None:
    """One JSON line for scripts (`--json`), else aligned `key value` lines for people."""
    if as_json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:<{width}} {value}")


def _cmd_node_start(args: argparse.Namespace) -> int:
    from node.home import Home, HomeError
    from node.ports import check_ports

    home = Home(Path(args.home))
    try:  # a user's mistake answered before torch and ezkl load (seconds) or anything dials
        home.check_exists()
        cfg = home.load_config()
        check_ports(cfg.listen, cfg.api_host, cfg.api_port, str(home.config_file))
        if args.bootstrap:
            from node.tools.join import check_bootstrap

            check_bootstrap(tuple(args.bootstrap))
    except HomeError as exc:
        print(f"zkpot: {exc}", file=sys.stderr)
        return 1
    from node.daemon import start

    return start(args.home, args.bootstrap)


def _cmd_node_init(args: argparse.Namespace) -> int:
    from node.home import HomeError
    from node.tools.join import JoinSpec, init_home

    spec = JoinSpec(
        home=Path(args.home),
        bootstrap=tuple(args.bootstrap),
        chain_id=args.chain_id or "",
        genesis_file=args.genesis or "",
        data_file=args.data or "",
        listen=tuple(args.listen or JoinSpec.listen),
        api_host=args.api_host,
        api_port=args.api_port,
        name=args.name or "",
    )
    try:
        summary = init_home(spec)
    except HomeError as exc:
        print(f"zkpot: node init failed: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary, args.json, width=11)
    return 0


def _cmd_testnet_init(args: argparse.Namespace) -> int:
    from node.tools.testnet import init

    spec = TestnetSpec(**network_kwargs(args))
    try:
        summary = init(Path(args.out), spec)
    except (ValueError, OSError) as exc:
        print(f"zkpot: testnet init failed: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary, args.json, width=14)
    return 0


def _cmd_genesis_check(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"zkpot: cannot read genesis file {path}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        genesis = Genesis.decode(data)
        rules.check_genesis(genesis)
    except ConsensusError as exc:
        print(f"zkpot: {path} is not a valid genesis: {exc}", file=sys.stderr)
        return 1
    summary = {
        "chain_id": genesis.hash().hex(),
        "chain_name": genesis.chain_name,
        "participants": len(genesis.participants),
        "rounds": genesis.eval_plan.num_batches,
        "eval_batch_size": genesis.eval_plan.batch_size,
        "task": f"{genesis.task.dataset}/{genesis.task.architecture}",
        "finality_depth": genesis.finality_depth,
    }
    _print_summary(summary, args.json, width=16)
    return 0


def _cmd_store_check(args: argparse.Namespace) -> int:
    from node.home import Home

    if (args.home is None) == (args.dir is None):
        print("zkpot: give the node's home (--home DIR) or a store directory", file=sys.stderr)
        return 2
    where = Home(Path(args.home)).store_dir if args.home is not None else Path(args.dir)
    try:
        with ChainStore.open(where, create=False) as store:
            problems = store.check_consistency()
            head = store.head() if not problems else None
            height = store.get_meta(head).height if head is not None else None  # type: ignore[union-attr]
    except StoreError as exc:
        print(f"zkpot: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "store": str(where),
                    "consistent": not problems,
                    "problems": problems,
                    "head": head.hex() if head else None,
                    "height": height,
                }
            )
        )
        return 1 if problems else 0
    if problems:
        for p in problems:
            print(f"problem: {p}")
        return 1
    print(f"consistent: head {head.hex() if head else '-'} at height {height}")
    return 0


def _cmd_circuit_build(args: argparse.Namespace) -> int:
    from prover.client import BuildCircuit
    from prover.models import ARCHITECTURES
    from prover.worker import WorkerError, run_once

    if args.task not in ARCHITECTURES:
        print(
            f"zkpot: unknown task {args.task!r}; choose one of {', '.join(ARCHITECTURES)}",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.eval_batch <= 1024:
        print("zkpot: --eval-batch must be between 1 and 1024", file=sys.stderr)
        return 2
    out = Path(args.out)
    srs = None
    if args.srs:
        srs = Path(args.srs)
        if not srs.is_file():
            print(f"zkpot: SRS file {srs} does not exist", file=sys.stderr)
            return 2
        digest = hashlib.sha256(srs.read_bytes()).hexdigest()
        if args.srs_sha256 and digest != args.srs_sha256.lower():
            print(
                f"zkpot: SRS file {srs} has sha256 {digest}, not the expected {args.srs_sha256}",
                file=sys.stderr,
            )
            return 1

    try:
        built = run_once(
            BuildCircuit(
                arch=args.task,
                batch_size=args.eval_batch,
                out=str(out),
                seed=args.seed,
                logrows=args.logrows,
                srs=str(srs) if srs else None,
            ),
            timeout=args.timeout,
            name="circuit",
        )
    except WorkerError as exc:
        print(f"zkpot: circuit build failed: {exc}", file=sys.stderr)
        return 1
    (out / "initial_model.bin").write_bytes(built.initial_model)
    result: dict[str, object] = dict(built.manifest)
    result["initial_model_hash"] = hashlib.sha256(built.initial_model).hexdigest()
    result["srs"] = (
        "imported" if srs else "generated (test-only: its secret is known to this machine)"
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"circuit artifacts in {out}")
        for key, value in result.items():
            print(f"  {key:<20} {value}")
    return 0


def _cmd_testnet_up(args: argparse.Namespace) -> int:
    from node.tools.testnet import up

    try:
        return up(Path(args.dir), args.blocks, timeout_s=args.timeout)
    except (ValueError, OSError) as exc:
        print(f"zkpot: testnet up failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zkpot: interrupted; nodes stopped", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkpot", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"zkpot {version('zkpot')}")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a node").add_subparsers(dest="sub", required=True)
    p = node.add_parser("start", help="run a node in the foreground until SIGINT/SIGTERM")
    p.add_argument("--home", required=True, help="the node's home directory")
    p.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="extra peer to dial (repeatable)",
    )
    p.set_defaults(func=_cmd_node_start)
    p = node.add_parser(
        "init", help="make a home for a chain another node runs (join from a bootstrap peer)"
    )
    p.add_argument("--home", required=True, help="the new node's home (must not exist yet)")
    p.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        required=True,
        metavar="MULTIADDR",
        help="a node of the chain, /ip4/IP/tcp/PORT/p2p/PEER_ID (repeatable)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--chain-id", help="the chain id (hex): the genesis is fetched and checked")
    which.add_argument("--genesis", metavar="FILE", help="the chain's genesis file")
    p.add_argument("--data", metavar="FILE", help="this participant's training data (.npz)")
    p.add_argument(
        "--listen", action="append", metavar="MULTIADDR", help="listen address (repeatable)"
    )
    p.add_argument("--api-host", default=DEFAULT_API_HOST)
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT)
    p.add_argument("--name", help="the node's name in logs (default: the home's name)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_node_init)

    testnet = sub.add_parser("testnet", help="a local testnet").add_subparsers(
        dest="sub", required=True
    )
    p = testnet.add_parser("init", help="write every node's home for a local testnet")
    p.add_argument(
        "--out", required=True, help="directory for the node homes (must be new or empty)"
    )
    add_network_args(p, TestnetSpec())
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_testnet_init)
    p = testnet.add_parser("up", help="run every node of DIR until N blocks are final everywhere")
    p.add_argument("dir", help="the directory `testnet init --out` wrote")
    p.add_argument(
        "--blocks",
        "--rounds",  # its old name, which `testnet init --rounds` (held-out batches) shares
        dest="blocks",
        type=int,
        default=5,
        help="stop once this many blocks are final on every node",
    )
    p.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    p.set_defaults(func=_cmd_testnet_up)

    genesis = sub.add_parser("genesis", help="genesis files").add_subparsers(
        dest="sub", required=True
    )
    p = genesis.add_parser("check", help="decode and validate a genesis file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_genesis_check)

    circuit = sub.add_parser("circuit", help="the accuracy circuit").add_subparsers(
        dest="sub", required=True
    )
    p = circuit.add_parser(
        "build", help="build the chain's circuit artifacts and print the manifest"
    )
    p.add_argument("--task", default="digits-mlp", help="architecture name (default: digits-mlp)")
    p.add_argument("--eval-batch", type=int, default=16, help="examples per evaluation batch")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial global model")
    p.add_argument("--logrows", type=int, default=14, help="circuit size: 2^logrows rows")
    p.add_argument("--srs", help="import this SRS file instead of generating a test-only one")
    p.add_argument("--srs-sha256", help="expected sha256 of --srs")
    p.add_argument(
        "--timeout", type=float, default=1800, help="seconds before the build is abandoned"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_circuit_build)

    store = sub.add_parser("store", help="chain stores").add_subparsers(dest="sub", required=True)
    p = store.add_parser("check", help="check a chain store's consistency (node must be stopped)")
    p.add_argument("--home", help="the node's home (its store is HOME/store)")
    p.add_argument("dir", nargs="?", help="a store directory (instead of --home)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_store_check)

    # status, chain, peers, model: inspect a running node through its HTTP API.
    add_participant_commands(sub)
    add_client_commands(sub)
    add_compose_commands(sub)  # testnet compose, testnet dns
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def run() -> None:
    """Console-script entry: exit with main()'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
