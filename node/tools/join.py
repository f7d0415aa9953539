"""`zkpot node init`: a home for a chain someone else runs, from a bootstrap address.

The genesis comes from a file or from the bootstrap peer (by chain id, over the sync
protocol, checked against the id: a peer cannot hand us another chain). Everything
else the genesis pins (circuit artifacts, the initial model) `zkpot node start`
fetches by hash, and it re-verifies every block it syncs. Nothing is written until
every check has passed, so a failed init leaves no half-made home behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import multiaddr
import trio

from consensus import rules
from consensus.crypto import SigningKey
from consensus.errors import ConsensusError
from consensus.roles import roles_of
from consensus.types import Genesis
from node.apispec import DEFAULT_API_HOST, DEFAULT_API_PORT
from node.home import Home, HomeError, NodeConfig
from node.ports import check_ports
from p2p import HostConfig, P2PHost, SyncClient, SyncError
from prover import trainfile
from prover.data import DatasetError

FETCH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class JoinSpec:
    home: Path
    bootstrap: tuple[str, ...]
    chain_id: str = ""  # hex; or `genesis_file`
    genesis_file: str = ""
    data_file: str = ""
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/27100",)
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    name: str = ""
    connect_timeout_s: float = 30.0


def check_new_home(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise HomeError(f"{path} exists and is not a directory; choose another --home")
    if path.is_dir() and any(path.iterdir()):
        what = "a zkpot home" if (path / "config.toml").exists() else "not empty"
        raise HomeError(
            f"{path} is already {what}; choose another --home, or delete it to start over"
        )


def check_bootstrap(addrs: tuple[str, ...]) -> None:
    if not addrs:
        raise HomeError("give at least one --bootstrap address of a node of the chain")
    for a in addrs:
        try:
            ma = multiaddr.Multiaddr(a)
            ma.value_for_protocol("p2p")
        except Exception:  # the multiaddr library raises several types for bad input
            raise HomeError(
                f"--bootstrap {a!r} is not a full peer address such as "
                "/ip4/10.0.0.2/tcp/27101/p2p/12D3KooW… (a running node prints its addrs)"
            ) from None


def parse_chain_id(text: str) -> bytes:
    try:
        chain_id = bytes.fromhex(text)
    except ValueError:
        chain_id = b""
    if len(chain_id) != 32:
        raise HomeError(f"--chain-id must be 64 hex digits (the genesis hash), got {text!r}")
    return chain_id


def read_genesis(path: str) -> Genesis:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HomeError(f"cannot read genesis file {path}: {exc.strerror}") from None
    try:
        return Genesis.decode(data)
    except ConsensusError as exc:
        raise HomeError(f"{path} is not a genesis file: {exc}") from None


async def fetch_genesis(
    chain_id: bytes, bootstrap: tuple[str, ...], connect_timeout_s: float
) -> Genesis:
    """The genesis with hash `chain_id`, from the bootstrap peers (a throwaway identity asks)."""
    host = P2PHost(
        HostConfig(
            seed=os.urandom(32),
            listen=("/ip4/127.0.0.1/tcp/0",),
            bootstrap=bootstrap,
            target_peers=0,  # one question to the bootstrap peers: no discovery
        ),
        chain_id,
    )
    # A command, not a daemon: its failure is said below in one line, so py-libp2p's own
    # dumps of a refused stream (7 lines for a wrong chain id) stay unsaid.
    lib = logging.getLogger("libp2p")
    level = lib.level
    lib.setLevel(logging.CRITICAL)
    try:
        return await _ask_genesis(host, chain_id, bootstrap, connect_timeout_s)
    finally:
        lib.setLevel(level)


async def _ask_genesis(
    host: P2PHost, chain_id: bytes, bootstrap: tuple[str, ...], connect_timeout_s: float
) -> Genesis:
    data: bytes | None = None
    failure = ""
    async with host.run():  # errors leave it as values: the host's nursery would wrap them
        with trio.move_on_after(connect_timeout_s):
            while not host.connected_peers():
                await trio.sleep(0.2)
        peers = host.connected_peers()
        if peers:
            try:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    data = await SyncClient(host).content_from_any(peers, chain_id)
            except (SyncError, trio.TooSlowError) as exc:
                failure = str(exc) or "timed out"
    if not peers:
        raise HomeError(
            f"cannot reach any bootstrap peer ({', '.join(bootstrap)}) within "
            f"{connect_timeout_s:g} s: is the node running, and is the address (IP, port, "
            "peer id) the one it printed?"
        )
    if data is None:
        raise HomeError(
            f"the bootstrap peer does not serve chain {chain_id.hex()} ({failure}): check "
            "--chain-id (`zkpot status` on a node of the chain prints it)"
        )
    return Genesis.decode(data)  # its bytes hash to chain_id: SyncClient checked them


def init_home(spec: JoinSpec) -> dict[str, object]:
    return trio.run(join_home, spec)


async def join_home(spec: JoinSpec) -> dict[str, object]:
    check_new_home(spec.home)
    check_bootstrap(spec.bootstrap)
    check_ports(spec.listen, spec.api_host, spec.api_port, "", flags=True)
    if not spec.chain_id and not spec.genesis_file:
        raise HomeError(
            "give --chain-id HEX (the bootstrap peer sends the genesis) or --genesis FILE; "
            "without either, init would trust whatever chain the peer is on"
        )
    if spec.genesis_file:
        genesis = read_genesis(spec.genesis_file)
        if spec.chain_id and genesis.hash() != parse_chain_id(spec.chain_id):
            raise HomeError(
                f"{spec.genesis_file} hashes to {genesis.hash().hex()}, not --chain-id "
                f"{spec.chain_id}: it is another chain's genesis"
            )
    else:
        chain_id = parse_chain_id(spec.chain_id)
        genesis = await fetch_genesis(chain_id, spec.bootstrap, spec.connect_timeout_s)
    try:
        rules.check_genesis(genesis)
    except ConsensusError as exc:
        raise HomeError(f"the chain's genesis is not valid here: {exc}") from None
    data_file = ""
    if spec.data_file:
        data = Path(spec.data_file).expanduser().resolve()
        plan = genesis.eval_plan
        try:
            await trio.to_thread.run_sync(trainfile.load, data, plan.input_shape, plan.num_classes)
        except DatasetError as exc:
            raise HomeError(str(exc)) from None
        data_file = str(data)
    key = SigningKey.generate()
    cfg = NodeConfig(
        name=spec.name or spec.home.name,
        listen=spec.listen,
        bootstrap=spec.bootstrap,
        api_host=spec.api_host,
        api_port=spec.api_port,
        data_file=data_file,
    )
    _write_home(spec.home, key, genesis, cfg)
    return {
        "home": str(spec.home),
        "chain_id": genesis.hash().hex(),
        "chain_name": genesis.chain_name,
        "public_key": key.public.hex(),
        "role": roles_of(genesis, key.public, genesis.participants).name,
        "data": data_file or "(none: this node follows until it has data and is admitted)",
        "next": f"zkpot node start --home {spec.home}",
    }


def _write_home(path: Path, key: SigningKey, genesis: Genesis, cfg: NodeConfig) -> None:
    """Write the home beside its place and move it in whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        home = Home(tmp)
        home.write_key(key)
        home.genesis_file.write_bytes(genesis.encode())
        home.config_file.write_text(cfg.to_toml())
        if path.is_dir():
            path.rmdir()  # empty (checked): replaced by the finished home
        tmp.rename(path)
        os.chmod(path, 0o700)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
