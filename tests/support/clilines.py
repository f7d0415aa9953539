"""Deployment files held to the real CLI: every `zkpot ...` line they hold must parse
with `build_parser()`; the Dockerfile's instructions; homes shaped as `zkpot testnet
init` writes them."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from consensus.crypto import SigningKey
from node.home import Home, NodeConfig
from node.tools import cli
from p2p import peer_id_from_seed

DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "Dockerfile"


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for action in parser._actions:
        out.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= option_strings(sub)
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse with the real CLI; an unknown command or flag fails the test, not the run.

    Flags must be spelled out: argparse would accept an abbreviation that a later flag
    could make ambiguous.
    """
    parser = cli.build_parser()
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    assert flags <= option_strings(parser), f"unknown or abbreviated flags in {argv}"
    try:
        return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`zkpot {shlex.join(argv)}` is not a valid zkpot command line")


def zkpot_commands(script: str) -> list[list[str]]:
    """The `zkpot ...` command lines of a shell script (split at ;, &&, ||, newlines)."""
    lex = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    commands: list[list[str]] = []
    current: list[str] = []
    for tok in [*lex, ";"]:
        if tok in (";", "&&", "||", "then", "else", "fi"):
            if current and current[0] == "zkpot":
                commands.append(current[1:])
            current = []
        else:
            current.append(tok)
    return commands


def fake_testnet(out: Path, nodes: int, p2p: int, api: int) -> list[SigningKey]:
    """Homes as `zkpot testnet init` writes them (config, key, genesis), without the circuit."""
    keys = [SigningKey.generate() for _ in range(nodes)]
    addrs = [
        f"/ip4/127.0.0.1/tcp/{p2p + i}/p2p/{peer_id_from_seed(k.seed)}" for i, k in enumerate(keys)
    ]
    for i, key in enumerate(keys):
        home = Home(out / f"node{i}")
        home.write_key(key)
        cfg = NodeConfig(
            name=f"node{i}",
            listen=(f"/ip4/127.0.0.1/tcp/{p2p + i}",),
            bootstrap=tuple(a for j, a in enumerate(addrs) if j != i),
            api_port=api + i,
        )
        home.config_file.write_text(cfg.to_toml())
        home.genesis_file.write_bytes(b"genesis")
        (home.artifacts).mkdir()
        (home.artifacts / "vk.key").write_bytes(b"vk")
    (out / "testnet.json").write_text("{}")
    return keys


def dockerfile(instruction: str) -> list[str]:
    """The arguments of every `instruction` line of docker/Dockerfile (continuations joined)."""
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [ln.split(None, 1)[1] for ln in lines if ln.startswith(instruction + " ")]
