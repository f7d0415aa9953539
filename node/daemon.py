"""`zkpot node start`: one trio nursery owning the p2p host, the round loop, the
prover workers and the API server. SIGINT/SIGTERM cancel it; every part closes
on the way out (workers killed, listeners closed, store closed last), so the
store is consistent at any stop: its writes are atomic batches. (A little over 300
lines: start-up checks of the home, the pinned files and the aggregation spec sit
beside the nursery they guard.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from consensus import rules
from consensus.crypto import sha256, short
from consensus.errors import InvalidError
from consensus.roles import roles_of
from consensus.strategy import rule_for
from consensus.types import AggregationSpec, Genesis, chain_id
from node.accuracy import AccuracyBoard
from node.api import create_app, serve_api
from node.behaviour import HONEST, Behaviour
from node.chain import Chain
from node.engine import Engine
from node.home import Home, HomeError
from node.interfaces import Prover
from node.ports import check_ports
from node.roundlog import RoundLog
from node.view import NodeView
from p2p import (
    GossipConfig,
    HostConfig,
    P2PHost,
    SyncClient,
    SyncError,
    SyncServer,
    TopicKind,
    Verdict,
)
from p2p.host import public_key_of
from prover import circuit, trainfile
from prover.client import DeriveAggregation, RegeneratePk, Warmup
from prover.data import DatasetError
from prover.worker import WorkerError, worker_pool
from storage import ChainStore, StoreError

log = logging.getLogger("zkpot.node")


def pinned_files(home: Home, genesis: Genesis) -> list[tuple[bytes, Path]]:
    """Every file the genesis pins by hash, and where this node keeps it."""
    c = genesis.circuit
    test_split = (
        [(genesis.test_index_hash, home.test_index_file)] if genesis.test_index_hash else []
    )
    return [
        (c.settings_hash, home.artifacts / circuit.SETTINGS),
        (c.compiled_hash, home.artifacts / circuit.COMPILED),
        (c.vk_hash, home.artifacts / circuit.VK),
        (c.srs_hash, home.artifacts / circuit.SRS),
        (genesis.initial_model_hash, home.initial_model_file),
        *test_split,
    ]


async def ensure_pinned_files(
    home: Home, genesis: Genesis, store: ChainStore, host: P2PHost
) -> None:
    """Have every pinned file locally, fetched by hash from peers if missing, and serve them.

    A node that joins with only a genesis and a bootstrap address gets the circuit
    artifacts, the initial model and (v6) the public test split's indices this way; each
    is checked against its pinned hash.
    """
    home.artifacts.mkdir(parents=True, exist_ok=True)
    sync = SyncClient(host)
    for want, path in pinned_files(home, genesis):
        data = path.read_bytes() if path.is_file() else None
        if data is not None and sha256(data) != want:
            raise HomeError(
                f"{path} does not match the hash the genesis pins; delete it to refetch it"
            )
        if data is None:
            data = store.get_blob(want)
        while data is None:
            peers = host.connected_peers()
            if peers:
                try:
                    data = await sync.content_from_any(peers, want)
                    log.info("fetched %s (%d bytes) from peers", path.name, len(data))
                    break
                except SyncError as exc:
                    log.info("fetching %s failed, retrying: %s", path.name, exc)
            await trio.sleep(1)
        if not path.is_file():
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        if not store.has_blob(want):
            store.put_blob(data)


def derive_manifest(home: Home, genesis: Genesis) -> circuit.Manifest:
    """The manifest from pinned values only (genesis + settings), written for the workers."""
    plan = genesis.eval_plan
    manifest = circuit.Manifest.derive(
        home.artifacts,
        architecture=genesis.task.architecture,
        batch_size=plan.batch_size,
        input_dim=math.prod(plan.input_shape),
        num_classes=plan.num_classes,
        proof_bytes=genesis.circuit.proof_bytes,
    )
    if manifest.input_scale != plan.input_scale_bits:
        raise HomeError("the circuit's input scale differs from the genesis evaluation plan")
    if manifest.commitment_points * circuit.COMPRESSED_BYTES != genesis.circuit.commitment_bytes:
        raise HomeError("the circuit's commitment size differs from the genesis")
    circuit.check_hashes(home.artifacts, manifest)
    manifest.save(home.artifacts)
    return manifest


async def check_aggregation_spec(home: Home, genesis: Genesis, pool: Prover) -> None:
    """An averaging rule's K and basis, re-derived from the pinned SRS and circuit: a
    genesis that pins others would make this node accept aggregates it cannot check."""
    if not rule_for(genesis).aggregates:
        return
    pinned = genesis.aggregation
    job = DeriveAggregation(str(home.artifacts), genesis.task.architecture, pinned.unusable_rows)
    derived = AggregationSpec.decode(await pool.run(job, timeout=600))
    if derived != pinned:
        raise HomeError(
            f"{home.genesis_file}: the genesis pins an aggregation basis (K "
            f"{short(pinned.constant, 16)}…, {pinned.parameters} parameters) that the circuit's "
            f"SRS does not give (K {short(derived.constant, 16)}…, {derived.parameters}): "
            "this genesis was not made for these circuit artifacts"
        )


async def run_node(home: Home, extra_bootstrap: tuple[str, ...] = ()) -> None:
    home.check_exists()
    cfg = home.load_config()
    check_ports(cfg.listen, cfg.api_host, cfg.api_port, str(home.config_file))
    key = home.load_key()
    genesis = home.load_genesis()
    try:
        rules.check_genesis(genesis)
    except InvalidError as exc:
        raise HomeError(f"{home.genesis_file}: {exc}") from None
    data_file = None
    if key.public in genesis.participants or cfg.data_file or home.data_file.exists():
        # a participant now, or once admitted: a file that does not fit the task stops
        # the node here, not mid-round
        data_file = home.training_data(cfg)
        plan = genesis.eval_plan
        try:
            await trio.to_thread.run_sync(
                trainfile.load, data_file, plan.input_shape, plan.num_classes
            )
        except DatasetError as exc:
            raise HomeError(str(exc)) from None
    batches = home.load_batches() if key.public == genesis.publisher else None
    store = ChainStore.open(home.store_dir)
    try:
        host = P2PHost(
            HostConfig(
                seed=key.seed,
                listen=cfg.listen,
                bootstrap=cfg.bootstrap + extra_bootstrap,
                target_peers=cfg.target_peers,
                max_connections=cfg.max_peers,
                # A block's validation (model fetch, proofs, re-evaluation) may take as long as
                # a verification job; the default 30 s would cut honest blocks off.
                gossip=GossipConfig(validation_timeout_s=cfg.verify_timeout_s),
            ),
            chain_id(genesis),
        )
        store.init_genesis(chain_id(genesis), genesis.encode())
        SyncServer(host, store)
        for kind in TopicKind:  # until the engine's validators are in: relay nothing
            host.gossip.set_validator(kind, _not_ready)
        roundlog = RoundLog()
        behaviour = Behaviour.from_env(os.environ)  # read once: tests make a node deviate
        if behaviour != HONEST:
            log.warning("test behaviour on (this node deviates from the protocol): %s", behaviour)
        async with (
            worker_pool(
                1,
                name=f"{cfg.name}-prover",
                warmup=Warmup(genesis.task.architecture, str(data_file) if data_file else None),
            ) as prover,
            worker_pool(cfg.verify_workers, name=f"{cfg.name}-verify", warmup=Warmup()) as verifier,
            host.run(),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            await ensure_pinned_files(home, genesis, store, host)
            derive_manifest(home, genesis)
            await check_aggregation_spec(home, genesis, verifier)
            chain = Chain(store, genesis, home.initial_model_file.read_bytes())
            engine = Engine(
                key=key,
                chain=chain,
                net=host,
                sync=SyncClient(host),
                prover=prover,
                verifier=verifier,
                artifacts=home.artifacts,
                roundlog=roundlog,
                data_file=str(data_file) if data_file else None,
                batches=batches,
                verify_timeout_s=cfg.verify_timeout_s,
                prove_timeout_s=cfg.prove_timeout_s,
                behaviour=behaviour,
            )
            if data_file is not None and not (home.artifacts / circuit.PK).exists():
                log.info("regenerating the proving key from the pinned circuit and SRS")
                await prover.run(RegeneratePk(str(home.artifacts)), timeout=1800)

            def peers() -> list[dict[str, object]]:
                out: list[dict[str, object]] = []
                for p in host.connected_peers():
                    now = chain.roster(chain.head).at(engine.current_round() or 0)
                    role = roles_of(genesis, public_key_of(p) or b"", now).name
                    out.append({"peer_id": str(p), "role": role, "addrs": host.peer_addrs(p)})
                return out

            view = NodeView(
                store,
                genesis,
                roundlog,
                peer_id=str(host.peer_id),
                name=cfg.name,
                addrs=lambda: host.addrs,
                role=lambda: engine.roles.name,
                peers=peers,
                current_round=engine.current_round,
                sync=engine.syncer.progress.report,
                registry=CollectorRegistry(),
            )
            board = AccuracyBoard(
                verifier, genesis.task.architecture, genesis.task.dataset, home.test_index_file
            )
            await nursery.start(board.run)
            app = create_app(view, engine, board)
            api_port = await nursery.start(serve_api, app, cfg.api_host, cfg.api_port)
            print(
                json.dumps(
                    {
                        "event": "ready",
                        "name": cfg.name,
                        "role": engine.roles.name,
                        "peer_id": str(host.peer_id),
                        "addrs": host.addrs,
                        "chain_id": chain.chain_id.hex(),
                        "api": f"http://{cfg.api_host}:{api_port}",
                    }
                ),
                flush=True,
            )
            log.info(
                "%s up as %s, head at height %d", cfg.name, engine.roles.name, chain.head_height()
            )
            await engine.run()
    finally:
        store.close()
        log.info("store closed")


async def _not_ready(item: object, raw: bytes, forwarder: object) -> Verdict:
    await trio.lowlevel.checkpoint()
    return Verdict.IGNORE


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for sig in signals:
            log.info("received %s: shutting down", signal.Signals(sig).name)
            scope.cancel()
            return


def start(home_dir: str, bootstrap: list[str]) -> int:
    home = Home(Path(home_dir))
    try:  # the node's configured name: every container's home is /data
        name = home.load_config().name
    except (HomeError, OSError):
        name = home.path.name  # run_node reports the bad config
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        trio.run(run_node, home, tuple(bootstrap))
    except (HomeError, circuit.CircuitError, WorkerError, StoreError) as exc:
        print(f"zkpot: {exc}", file=sys.stderr)
        return 1
    return 0
