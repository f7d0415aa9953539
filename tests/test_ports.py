"""A node refuses a port another process holds, at once and in one line (issue 22).

py-libp2p's listener sets SO_REUSEPORT, so without the preflight a second node given a
taken p2p port shared it with the first (the kernel split the first node's inbound
connections). Here the holder is a listening socket with SO_REUSEPORT, as a running
node's is, and the commands are real processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.home import HomeError
from node.ports import check_free, check_ports, tcp_listen_ports

pytestmark = pytest.mark.slow  # node processes: not in the fast tier


@pytest.fixture
def held() -> Iterator[int]:
    """A port held as a running node holds its p2p port (SO_REUSEPORT, listening)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_listening_port_is_taken_and_a_free_one_is_not(held: int) -> None:
    with pytest.raises(HomeError, match=f"p2p port 127.0.0.1:{held} is taken"):
        check_free("127.0.0.1", held, "p2p", "pick another")
    with pytest.raises(HomeError, match=f"p2p port 0.0.0.0:{held} is taken"):
        check_free("0.0.0.0", held, "p2p", "pick another")  # every interface includes it
    check_ports([f"/ip4/127.0.0.1/tcp/{_free()}", "/ip4/127.0.0.1/tcp/0"], "127.0.0.1", 0, "x")
    assert tcp_listen_ports(["/ip4/1.2.3.4/tcp/7", "/ip4/1.2.3.4/tcp/0", "/dns4/a/tcp/5"]) == [
        ("1.2.3.4", 7)
    ]


def _cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "node.tools.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=None if env is None else {**os.environ, **env},
    )
    return proc.returncode, proc.stderr.strip()


def test_node_start_refuses_a_taken_p2p_or_api_port_before_anything_else(
    held: int, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for name in ("node.key", "genesis.bin"):  # never read: the ports are checked first
        (home / name).write_bytes(b"not read")
    config = home / "config.toml"
    config.write_text(
        f'[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/{held}"]\nbootstrap = []\n\n'
        f'[api]\nhost = "127.0.0.1"\nport = {_free()}\n'
    )
    code, err = _cli("node", "start", "--home", str(home))
    assert code == 1
    assert err == (
        f"zkpot: the p2p port 127.0.0.1:{held} is taken by another process (another node?): "
        f"set [p2p] listen in {config}"
    )
    config.write_text(
        f'[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/{_free()}"]\nbootstrap = []\n\n'
        f'[api]\nhost = "127.0.0.1"\nport = {held}\n'
    )
    code, err = _cli("node", "start", "--home", str(home))
    assert code == 1
    assert err.endswith(
        f"the API port 127.0.0.1:{held} is taken by another process "
        f"(another node?): set [api] port in {config}"
    )


def test_a_missing_home_or_a_malformed_address_is_answered_at_once(tmp_path: Path) -> None:
    """Before torch and ezkl load (seconds) or anything dials."""
    # torch and ezkl that refuse to load: a command that needed them would fail otherwise
    shadow = tmp_path / "shadow"
    for mod in ("torch", "ezkl"):
        (shadow / mod).mkdir(parents=True)
        (shadow / mod / "__init__.py").write_text(f"raise ImportError('{mod} loaded')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), str(Path.cwd())])}
    code, err = _cli("node", "start", "--home", str(tmp_path / "none"), env=env)
    assert code == 1 and "does not exist; create one with `zkpot node init`" in err, err
    home = tmp_path / "home"
    home.mkdir()
    for name in ("node.key", "genesis.bin"):
        (home / name).write_bytes(b"not read")
    (home / "config.toml").write_text(f'[api]\nhost = "127.0.0.1"\nport = {_free()}\n')
    argv = ("node", "start", "--home", str(home), "--bootstrap", "/ip4/1.2.3/tcp/9")
    code, err = _cli(*argv, env=env)
    assert code == 1 and "is not a full peer address" in err, err


def test_node_init_refuses_a_taken_port_before_dialling(held: int, tmp_path: Path) -> None:
    bootstrap = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWGRUVh3Jb1V3DJSgiJ5XRMuRmtuQKUnR6mGEKtcL8uvNx"
    code, err = _cli(
        "node", "init", "--home", str(tmp_path / "new"), "--chain-id", "00" * 32,
        "--bootstrap", bootstrap, "--listen", f"/ip4/127.0.0.1/tcp/{held}",
        "--api-port", str(_free()),
    )  # fmt: skip
    assert code == 1
    assert f"the p2p port 127.0.0.1:{held} is taken" in err and "--listen" in err
    assert not (tmp_path / "new").exists()


def test_the_connection_bounds_are_config_and_checked() -> None:
    from node.home import NodeConfig

    cfg = NodeConfig.from_toml("[p2p]\ntarget_peers = 4\nmax_peers = 8\n", "c.toml")
    assert (cfg.target_peers, cfg.max_peers) == (4, 8)
    assert NodeConfig.from_toml(cfg.to_toml(), "c.toml") == cfg
    with pytest.raises(HomeError, match=r"target_peers <= max_peers .*got 9 and 8"):
        NodeConfig.from_toml("[p2p]\ntarget_peers = 9\nmax_peers = 8\n", "c.toml")
