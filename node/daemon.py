"""`zkpot node start`: one trio nursery owning the p2p host, the round loop, the
prover workers and the API server. SIGINT/SIGTERM cancel it; every part closes
on the way out (workers killed, listeners closed, store closed last), so the
store is consistent at any stop: its writes are atomic batches.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import trio
from prometheus_client import CollectorRegistry

from consensus import rules
from consensus.errors import InvalidError
from node.api import create_app, serve_api
from node.chain import Chain
from node.engine import Engine
from node.home import Home, HomeError
from node.roundlog import RoundLog
from node.view import NodeView
from p2p import HostConfig, P2PHost, SyncServer
from p2p.host import public_key_of
from prover import circuit
from prover.worker import WorkerError, worker_pool
from storage import ChainStore, StoreError

log = logging.getLogger("zkpot.node")


def check_artifacts(home: Home) -> circuit.Manifest:
    """The artifacts must be exactly those the genesis pins."""
    genesis = home.load_genesis()
    manifest = circuit.Manifest.load(home.artifacts)
    pinned = genesis.circuit
    for name, want, got in (
        ("settings", pinned.settings_hash.hex(), manifest.settings_hash),
        ("compiled circuit", pinned.compiled_hash.hex(), manifest.compiled_hash),
        ("verifying key", pinned.vk_hash.hex(), manifest.vk_hash),
        ("SRS", pinned.srs_hash.hex(), manifest.srs_hash),
    ):
        if want != got:
            raise HomeError(f"{home.artifacts}: the {name} is not the one the genesis pins")
    circuit.check_hashes(home.artifacts, manifest)
    return manifest


async def run_node(home: Home, extra_bootstrap: tuple[str, ...] = ()) -> None:
    home.check_exists()
    cfg = home.load_config()
    key = home.load_key()
    genesis = home.load_genesis()
    try:
        rules.check_genesis(genesis)
    except InvalidError as exc:
        raise HomeError(f"{home.genesis_file}: {exc}") from None
    check_artifacts(home)
    is_participant = key.public in genesis.participants
    is_publisher = key.public == genesis.publisher
    shard = home.shard_file.read_bytes() if is_participant else None
    batches = home.load_batches() if is_publisher else None
    store = ChainStore.open(home.store_dir)
    try:
        chain = Chain(store, genesis, home.initial_model_file.read_bytes())
        roundlog = RoundLog()
        async with (
            worker_pool(1, name=f"{cfg.name}-prover") as prover,
            worker_pool(cfg.verify_workers, name=f"{cfg.name}-verify") as verifier,
        ):
            if is_participant and not (home.artifacts / circuit.PK).exists():
                log.info("regenerating the proving key from the pinned circuit and SRS")
                await prover.run("regenerate_pk", str(home.artifacts), timeout=1800)
            host = P2PHost(
                HostConfig(
                    seed=key.seed, listen=cfg.listen, bootstrap=cfg.bootstrap + extra_bootstrap
                ),
                chain.cid,
            )
            SyncServer(host, store)
            engine = Engine(
                key=key,
                chain=chain,
                host=host,
                prover=prover,
                verifier=verifier,
                artifacts=home.artifacts,
                roundlog=roundlog,
                shard=shard,
                dataset_path=cfg.dataset_path,
                batches=batches,
                verify_timeout_s=cfg.verify_timeout_s,
                prove_timeout_s=cfg.prove_timeout_s,
            )

            def peers() -> list[dict[str, object]]:
                out: list[dict[str, object]] = []
                for p in host.connected_peers():
                    pub = public_key_of(p)
                    role = "observer"
                    if pub == genesis.publisher:
                        role = "publisher"
                    elif pub in genesis.participants:
                        role = "participant"
                    out.append({"peer_id": str(p), "role": role})
                return out

            view = NodeView(
                store,
                genesis,
                roundlog,
                peer_id=str(host.peer_id),
                role=engine.roles.name,
                peers=peers,
                registry=CollectorRegistry(),
            )
            async with host.run(), trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
                api_port = await nursery.start(
                    serve_api, create_app(view), cfg.api_host, cfg.api_port
                )
                print(
                    json.dumps(
                        {
                            "event": "ready",
                            "name": cfg.name,
                            "role": engine.roles.name,
                            "peer_id": str(host.peer_id),
                            "addrs": host.addrs,
                            "chain_id": chain.cid.hex(),
                            "api": f"http://{cfg.api_host}:{api_port}",
                        }
                    ),
                    flush=True,
                )
                log.info(
                    "%s up as %s, head at height %d",
                    cfg.name,
                    engine.roles.name,
                    chain.head_height(),
                )
                await engine.run()
    finally:
        store.close()
        log.info("store closed")


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for sig in signals:
            log.info("received %s: shutting down", signal.Signals(sig).name)
            scope.cancel()
            return


def start(home_dir: str, bootstrap: list[str]) -> int:
    home = Home(Path(home_dir))
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {home.path.name} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        trio.run(run_node, home, tuple(bootstrap))
    except (HomeError, circuit.CircuitError, WorkerError, StoreError) as exc:
        print(f"zkpot: {exc}", file=sys.stderr)
        return 1
    return 0
