"""A node's home directory: config, key, genesis, artifacts, data assignment, store.

Layout:
    config.toml          operator settings (see NodeConfig)
    node.key             32-byte ed25519 seed, mode 0600, never logged
    genesis.bin          the chain's genesis (canonical encoding)
    artifacts/           circuit artifacts (pk.key is regenerated locally, never shipped)
    initial_model.bin    the genesis model
    data.npz             participant: its own training data (prover.trainfile), unless
                         config.toml's [data] file names another file
    test_index.bin       int64 LE indices of the public test split (accuracy reports)
    publisher/batches.bin  publisher only: the held-out batches (msgpack list of EvalBatch)
    store/               LevelDB chain store
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from consensus.crypto import SigningKey
from consensus.errors import ConsensusError
from consensus.types import EvalBatch, Genesis
from node.apispec import DEFAULT_API_HOST, DEFAULT_API_PORT


class HomeError(Exception):
    """A home directory that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class NodeConfig:
    name: str = "node"
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    target_peers: int = 16  # discovery dials peers until this many are connected (0: off)
    max_peers: int = 64  # connections beyond this are refused
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    data_file: str = ""  # a participant's training data; "" is data.npz in the home
    verify_workers: int = 1
    prove_timeout_s: float = 600.0
    verify_timeout_s: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> str:
        def strs(xs: tuple[str, ...]) -> str:
            return "[" + ", ".join(_q(x) for x in xs) + "]"

        return (
            f"[node]\nname = {_q(self.name)}\n\n"
            f"[p2p]\nlisten = {strs(self.listen)}\nbootstrap = {strs(self.bootstrap)}\n"
            f"target_peers = {self.target_peers}\nmax_peers = {self.max_peers}\n\n"
            f"[api]\nhost = {_q(self.api_host)}\nport = {self.api_port}\n\n"
            f"[data]\nfile = {_q(self.data_file)}\n\n"
            f"[prover]\nverify_workers = {self.verify_workers}\n"
            f"prove_timeout_s = {self.prove_timeout_s}\nverify_timeout_s = {self.verify_timeout_s}\n"
        )

    @classmethod
    def from_toml(cls, text: str, where: str) -> NodeConfig:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise HomeError(f"{where}: not valid TOML: {exc}") from None
        try:
            p2p, api, data, prover = (doc.get(k, {}) for k in ("p2p", "api", "data", "prover"))
            api_host = api.get("host", DEFAULT_API_HOST)
            api_port = api.get("port", DEFAULT_API_PORT)
            if not isinstance(api_host, str) or type(api_port) is not int:
                raise HomeError(f"{where}: [api] host must be a string and port an integer")
            cfg = cls(
                name=str(doc.get("node", {}).get("name", "node")),
                listen=tuple(str(a) for a in p2p.get("listen", cls.listen)),
                bootstrap=tuple(str(a) for a in p2p.get("bootstrap", ())),
                target_peers=int(p2p.get("target_peers", cls.target_peers)),
                max_peers=int(p2p.get("max_peers", cls.max_peers)),
                api_host=api_host,
                api_port=api_port,
                data_file=str(data.get("file", "")),
                verify_workers=int(prover.get("verify_workers", 1)),
                prove_timeout_s=float(prover.get("prove_timeout_s", 600.0)),
                verify_timeout_s=float(prover.get("verify_timeout_s", 120.0)),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise HomeError(f"{where}: bad value: {exc}") from None
        if not 0 <= cfg.api_port <= 65535:
            raise HomeError(f"{where}: api.port {cfg.api_port} is not a TCP port")
        if not 0 <= cfg.target_peers <= cfg.max_peers or cfg.max_peers < 1:
            raise HomeError(
                f"{where}: [p2p] needs 0 <= target_peers <= max_peers and max_peers >= 1 "
                f"(got {cfg.target_peers} and {cfg.max_peers})"
            )
        if not 1 <= cfg.verify_workers <= 16:
            raise HomeError(f"{where}: prover.verify_workers must be 1..16")
        return cfg


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Home:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def key_file(self) -> Path:
        return self.path / "node.key"

    @property
    def genesis_file(self) -> Path:
        return self.path / "genesis.bin"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @property
    def store_dir(self) -> Path:
        return self.path / "store"

    @property
    def initial_model_file(self) -> Path:
        return self.path / "initial_model.bin"

    @property
    def data_file(self) -> Path:
        """The participant's own training data (the default; config may name another)."""
        return self.path / "data.npz"

    def training_data(self, cfg: NodeConfig) -> Path:
        if not cfg.data_file:
            return self.data_file
        named = Path(cfg.data_file).expanduser()
        return named if named.is_absolute() else self.path / named

    @property
    def test_index_file(self) -> Path:
        return self.path / "test_index.bin"

    @property
    def batches_file(self) -> Path:
        return self.path / "publisher" / "batches.bin"

    def check_exists(self) -> None:
        if not self.path.is_dir():
            raise HomeError(
                f"node home {self.path} does not exist; create one with `zkpot node init` (join a chain) or `zkpot testnet init`"
            )
        for f in (self.config_file, self.key_file, self.genesis_file):
            if not f.is_file():
                raise HomeError(f"node home {self.path} has no {f.name}; is this a zkpot home?")

    def write_key(self, key: SigningKey) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.seed)
        os.chmod(self.key_file, 0o600)

    def load_key(self) -> SigningKey:
        mode = stat.S_IMODE(self.key_file.stat().st_mode)
        if mode & 0o077:
            raise HomeError(
                f"{self.key_file} is readable by others (mode {mode:o}); run chmod 600 on it"
            )
        seed = self.key_file.read_bytes()
        if len(seed) != 32:
            raise HomeError(
                f"{self.key_file} must hold a 32-byte ed25519 seed, it has {len(seed)} bytes"
            )
        return SigningKey(seed)

    def load_config(self) -> NodeConfig:
        return NodeConfig.from_toml(self.config_file.read_text(), str(self.config_file))

    def load_genesis(self) -> Genesis:
        try:
            return Genesis.decode(self.genesis_file.read_bytes())
        except ConsensusError as exc:
            raise HomeError(f"{self.genesis_file} is not a valid genesis: {exc}") from None

    def load_batches(self) -> list[EvalBatch]:
        try:
            raws = msgpack.unpackb(self.batches_file.read_bytes(), raw=False)
            return [EvalBatch.decode(r) for r in raws]
        except (OSError, ValueError, ConsensusError) as exc:
            raise HomeError(
                f"{self.batches_file}: cannot read the held-out batches: {exc}"
            ) from None

    def write_batches(self, batches: list[EvalBatch]) -> None:
        self.batches_file.parent.mkdir(parents=True, exist_ok=True)
        self.batches_file.write_bytes(
            msgpack.packb([b.encode() for b in batches], use_bin_type=True)
        )
        os.chmod(self.batches_file, 0o600)
