"""`zkpot node init`: a home from a bootstrap peer and a chain id (real hosts, a real
sync server over a real store), and every way a user can get it wrong: each is refused
with what to do, and leaves nothing behind."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from node.home import Home, HomeError
from node.tools.cli import main
from node.tools.join import JoinSpec, join_home
from p2p import P2PHost, SyncServer
from storage import ChainStore
from support.chainfactory import make_chain
from support.p2p_util import config, running

CHAIN = make_chain()


async def _with_server(tmp_path: Path, body: object) -> None:
    store = ChainStore.open(tmp_path / "server-store")
    store.init_genesis(CHAIN.chain_id, CHAIN.genesis.encode())
    host = P2PHost(config("join-server"), CHAIN.chain_id)
    SyncServer(host, store)
    try:
        async with running([host]):
            await body(f"{host.addrs[0]}")  # type: ignore[operator]
    finally:
        store.close()


def _spec(home: Path, addr: str, **kw: object) -> JoinSpec:
    return JoinSpec(home=home, bootstrap=(addr,), connect_timeout_s=5, **kw)  # type: ignore[arg-type]


async def test_init_fetches_the_genesis_by_chain_id_and_writes_a_home(tmp_path: Path) -> None:
    home = tmp_path / "newcomer"

    async def body(addr: str) -> None:
        out = await join_home(_spec(home, addr, chain_id=CHAIN.chain_id.hex()))
        assert out["chain_id"] == CHAIN.chain_id.hex() and out["role"] == "observer"

    await _with_server(tmp_path, body)
    h = Home(home)
    assert h.load_genesis() == CHAIN.genesis
    assert stat.S_IMODE(h.key_file.stat().st_mode) == 0o600
    assert len(h.load_config().bootstrap) == 1


async def test_a_wrong_chain_id_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    home = tmp_path / "newcomer"

    async def body(addr: str) -> None:
        with pytest.raises(HomeError, match=r"does not serve chain .*check --chain-id"):
            await join_home(_spec(home, addr, chain_id="ab" * 32))

    await _with_server(tmp_path, body)
    assert not home.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".newcomer")]


async def test_an_unreachable_bootstrap_peer_is_named(tmp_path: Path) -> None:
    gone = P2PHost(config("join-gone"), CHAIN.chain_id)
    async with running([gone]):
        addr = f"{gone.addrs[0]}"
    spec = JoinSpec(tmp_path / "n", (addr,), chain_id=CHAIN.chain_id.hex(), connect_timeout_s=2)
    with pytest.raises(HomeError, match=r"cannot reach any bootstrap peer .*is the node running"):
        await join_home(spec)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"chain_id": "xyz"}, "64 hex digits"),
        ({"chain_id": "ab" * 31}, "64 hex digits"),
        ({}, "give --chain-id HEX .* or --genesis FILE"),
        ({"genesis_file": "/nonexistent/genesis.bin"}, "cannot read genesis file"),
    ],
)
async def test_bad_flags_are_refused_with_what_to_do(
    tmp_path: Path, kw: dict[str, str], message: str
) -> None:
    addr = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWLRPJAA5o6RD4BaRYnVkMSyzm2uRw2WPz1dJXqWhx5GUq"
    with pytest.raises(HomeError, match=message):
        await join_home(JoinSpec(tmp_path / "n", (addr,), **kw))  # type: ignore[arg-type]
    assert not (tmp_path / "n").exists()


async def test_a_bad_bootstrap_address_or_an_existing_home_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="not a full peer address"):
        await join_home(JoinSpec(tmp_path / "n", ("/ip4/127.0.0.1/tcp/1",), chain_id="ab" * 32))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.toml").write_text("")
    with pytest.raises(HomeError, match="already a zkpot home"):
        await join_home(JoinSpec(taken, ("/ip4/1.2.3.4/tcp/1",), chain_id="ab" * 32))


async def test_a_genesis_file_must_be_the_chain_ids(tmp_path: Path) -> None:
    gfile = tmp_path / "genesis.bin"
    gfile.write_bytes(CHAIN.genesis.encode())
    addr = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWLRPJAA5o6RD4BaRYnVkMSyzm2uRw2WPz1dJXqWhx5GUq"
    with pytest.raises(HomeError, match="it is another chain's genesis"):
        await join_home(
            JoinSpec(tmp_path / "n", (addr,), chain_id="ab" * 32, genesis_file=str(gfile))
        )
    (tmp_path / "junk.bin").write_bytes(b"\x01\x02")
    with pytest.raises(HomeError, match="is not a genesis file"):
        await join_home(JoinSpec(tmp_path / "n", (addr,), genesis_file=str(tmp_path / "junk.bin")))
    # the file alone (no network needed) makes a home
    out = await join_home(JoinSpec(tmp_path / "n", (addr,), genesis_file=str(gfile)))
    assert out["chain_id"] == CHAIN.chain_id.hex()


async def test_a_data_file_that_does_not_fit_the_task_is_named_at_init(tmp_path: Path) -> None:
    gfile = tmp_path / "genesis.bin"
    gfile.write_bytes(CHAIN.genesis.encode())
    plan = CHAIN.genesis.eval_plan
    bad = tmp_path / "mine.npz"
    np.savez(bad, x=np.zeros((3, 5), dtype=np.float32), y=np.zeros(3, dtype=np.int64))
    addr = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWLRPJAA5o6RD4BaRYnVkMSyzm2uRw2WPz1dJXqWhx5GUq"
    with pytest.raises(HomeError, match=r"mine\.npz"):
        await join_home(
            JoinSpec(tmp_path / "n", (addr,), genesis_file=str(gfile), data_file=str(bad))
        )
    assert not (tmp_path / "n").exists()
    good = tmp_path / "good.npz"
    dim = int(np.prod(plan.input_shape))
    np.savez(
        good,
        x=np.zeros((4, dim), dtype=np.float32),
        y=np.arange(4, dtype=np.int64) % plan.num_classes,
    )
    await join_home(JoinSpec(tmp_path / "n", (addr,), genesis_file=str(gfile), data_file=str(good)))
    assert Home(tmp_path / "n").load_config().data_file == str(good.resolve())


def test_the_cli_prints_the_reason_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "node.key").write_bytes(b"")
    code = main(
        [
            "node",
            "init",
            "--home",
            str(taken),
            "--chain-id",
            "ab" * 32,
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWLRPJAA5o6RD4BaRYnVkMSyzm2uRw2WPz1dJXqWhx5GUq",
        ]
    )
    assert code == 1
    assert "node init failed" in capsys.readouterr().err
