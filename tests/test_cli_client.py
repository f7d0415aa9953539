"""The inspection CLI against a real API server (a trio thread) over a real chain store."""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import trio

from node.api import create_app, serve_api
from node.home import Home
from node.tools.cli import main
from node.tools.client import DEFAULT_API, ClientError, api_url_from_home
from node.tools.names import names_near
from node.tools.tables import format_participants, format_peers, format_round
from p2p.identity import peer_id_of_key
from prover.models import build_model, model_from_bytes
from support import free_port
from support.apinode import ARCH, Node


@dataclass
class Server:
    node: Node
    url: str
    port: int


def _serve_in_thread(
    node: Node,
) -> tuple[threading.Thread, trio.Event, trio.lowlevel.TrioToken, int]:
    ready: queue.Queue[tuple[trio.Event, trio.lowlevel.TrioToken, int] | BaseException] = (
        queue.Queue()
    )

    async def run() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_api(
                    create_app(node.view), port=0, shutdown=stop, task_status=task_status
                )
            )
            ready.put((stop, trio.lowlevel.current_trio_token(), port))

    def target() -> None:
        try:
            trio.run(run)
        except BaseException as exc:  # surface startup failures to the fixture
            ready.put(exc)

    thread = threading.Thread(target=target, name="api-server", daemon=True)
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    stop, token, port = got
    return thread, stop, token, port


@pytest.fixture(scope="module")
def server(node: Node) -> Iterator[Server]:
    thread, stop, token, port = _serve_in_thread(node)
    try:
        yield Server(node, f"http://127.0.0.1:{port}", port)
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout=10)
    assert not thread.is_alive()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------- tables and JSON


def test_status(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "status", "--api", server.url)
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith("head "))
    assert lines["chain"] == f"test ({server.node.chain.chain_id.hex()})"
    assert lines["node"] == "node7: 12D3KooWSelf (observer)"
    assert lines["addrs"] == "/ip4/127.0.0.1/tcp/27107/p2p/12D3KooWSelf"  # ready for --bootstrap
    assert lines["round"] == "7 of 8"
    assert "height 5, round 6, score 50" in out
    assert f"finalized  height 2, {server.node.hashes[2].hex()}" in out

    code, out, _ = _run(capsys, "status", "--api", server.url, "--json")
    assert code == 0 and json.loads(out)["head"]["height"] == 5


def test_chain_head_and_block(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, head, _ = _run(capsys, "chain", "head", "--api", server.url)
    assert code == 0
    code, by_height, _ = _run(capsys, "chain", "block", "5", "--api", server.url)
    assert code == 0 and head == by_height
    h2 = server.node.hashes[2].hex()
    code, out, _ = _run(capsys, "chain", "block", h2, "--api", server.url)
    assert code == 0
    assert f"hash      {h2}" in out
    assert "status    final" in out
    assert "score     10 (cumulative 20)" in out
    commit_rows = [line.split() for line in out.splitlines()[-3:]]
    assert sorted(int(r[2]) for r in commit_rows) == [8, 9, 10]

    code, out, _ = _run(capsys, "chain", "block", "2", "--api", server.url, "--json")
    assert code == 0 and json.loads(out)["hash"] == h2


def test_chain_blocks_table_and_paging(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _run(capsys, "chain", "blocks", "--from", "1", "--to", "3", "--api", server.url)
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split() == [
        "HEIGHT",
        "ROUND",
        "HASH",
        "PROPOSER",
        "RANK",
        "MEMBERS",
        "K",
        "CUM",
        "FINAL",
    ]
    assert [r.split()[:2] for r in rows[1:]] == [["1", "0"], ["2", "1"], ["3", "3"]]
    assert rows[1].split()[2] == server.node.hashes[1].hex()[:16]
    assert rows[2].endswith("final") and not rows[3].endswith("final")

    # The server caps each page; the CLI follows next_from to cover the asked range.
    monkeypatch.setattr("node.view.MAX_BLOCKS_PER_CALL", 2)
    code, out, _ = _run(capsys, "chain", "blocks", "--from", "0", "--api", server.url, "--json")
    assert code == 0
    assert [b["height"] for b in json.loads(out)["blocks"]] == [0, 1, 2, 3, 4, 5]


def test_a_round_whose_accuracy_is_being_measured_says_so() -> None:
    r = {"round": 6, "observed": True, "reveal": {"revealed": False, "sealed": []}}
    r |= {"block": None, "proofs": [], "commits": [], "accuracy_ppm": None}
    line = [x for x in format_round(r | {"accuracy_pending": True}).splitlines() if "accuracy" in x]
    assert line == ["accuracy         measuring"]
    assert "accuracy         -" in format_round(r)


def test_chain_round(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "chain", "round", "6", "--api", server.url)
    assert code == 0
    assert "accuracy         91.23%" in out
    assert f"winner           {server.node.blocks[-1].proposer.hex()}" in out
    assert "revealed         batch 6" in out
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["COMMIT", "PARTICIPANT", "K", "VALID", "RANK", "REASON"]
    assert sorted((r.split()[2], r.split()[4]) for r in table[1:]) == [
        ("10", "1"),
        ("8", "3"),
        ("9", "2"),
    ]

    code, out, _ = _run(capsys, "chain", "round", "7", "--api", server.url)
    assert code == 0
    assert "INVALID" in out and "bad proof" in out and "note: publisher revealed late" in out


def test_peers(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "peers", "--api", server.url)
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split() == ["PEER_ID", "ADDRS", "ROLE"]
    assert rows[1].split() == ["12D3KooWPeerA", "/ip4/127.0.0.1/tcp/27101", "participant"]


def test_api_address_from_home(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "config.toml").write_text(
        f'[node]\nrole = "observer"\n\n[api]\nhost = "127.0.0.1"\nport = {server.port}\n'
    )
    code, out, _ = _run(capsys, "chain", "head", "--home", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["height"] == 5

    code, _, err = _run(capsys, "status", "--home", str(tmp_path / "nope"))
    assert code == 1 and "no config.toml in node home" in err


@pytest.mark.parametrize(
    ("api", "url"),
    [
        ("", DEFAULT_API),
        ('host = "0.0.0.0"\nport = 9001', "http://127.0.0.1:9001"),
        ('host = "::1"\nport = 9001', "http://[::1]:9001"),
    ],
)
def test_api_address_from_home_is_read_as_the_node_reads_it(
    tmp_path: Path, api: str, url: str
) -> None:
    (tmp_path / "config.toml").write_text(f"[api]\n{api}\n")
    assert api_url_from_home(tmp_path) == url
    port = int(url.rsplit(":", 1)[1])
    assert Home(tmp_path).load_config().api_port == port


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ('port = "8645"', "[api] host must be a string and port an integer"),
        ("host = 1", "[api] host must be a string and port an integer"),
        ("port = 70000", "api.port 70000 is not a TCP port"),
        ("port = 0", "[api] port 0 is not an address to reach"),
        ("port = ", "not valid TOML"),
    ],
)
def test_bad_api_address_in_home_says_what_to_fix(tmp_path: Path, api: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(f"[api]\n{api}\n")
    with pytest.raises(ClientError) as err:
        api_url_from_home(tmp_path)
    assert message in err.value.message and "pass --api URL" in err.value.message


# ---------------------------------------------------------------------- errors


def test_a_testnet_s_nodes_are_named_where_their_keys_are_printed(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--home inside a testnet: the sibling homes' keys name the proposers, the
    participants and the peers (node.tools.names); --json stays the API's."""
    chain = server.node.chain
    for name, key in (("node0", chain.participants[0]), ("node1", chain.participants[1])):
        home = Home(tmp_path / name)
        home.path.mkdir()
        home.write_key(key)
        (home.path / "config.toml").write_text(f'[api]\nhost = "127.0.0.1"\nport = {server.port}\n')
    (tmp_path / "notes").mkdir()  # not a home: skipped
    (tmp_path / "testnet.json").write_text("{}")  # a testnet's directory: names apply
    home0 = str(tmp_path / "node0")
    code, out, _ = _run(capsys, "chain", "blocks", "--home", home0)
    assert code == 0
    proposers = {row.split()[3] for row in out.splitlines()[1:] if not row.startswith("0 ")}
    assert proposers == {"node0"}  # it wins every round
    code, out, _ = _run(capsys, "chain", "round", "6", "--home", home0)
    assert code == 0 and "winner" in out and "node0" in out
    code, out, _ = _run(capsys, "chain", "blocks", "--home", home0, "--json")
    assert code == 0 and "node0" not in out
    names = names_near(home0)
    (tmp_path / "testnet.json").unlink()  # any other directory is not scanned
    assert names_near(home0) == {}
    peer = str(peer_id_of_key(chain.participants[1].public))
    table = format_peers({"peers": [{"peer_id": peer, "role": "participant"}]}, names)
    assert table.splitlines()[1].split() == ["node1", peer, "participant"]
    key1 = chain.participants[1].public.hex()
    tenure = {"key": key1, "joined": 0, "left": None, "active": True}
    listing = {
        "round": 3,
        "publisher": "ab",
        "participants": [tenure],
        "pending": [],
        "requests": [],
    }
    assert f"node1 {key1}" in format_participants(listing, names)


def test_not_found_and_malformed(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "chain", "block", "99", "--api", server.url)
    assert (code, out) == (1, "")
    assert err == "zkpot: block 99 not found (head is at height 5)\n"
    code, _, err = _run(capsys, "chain", "block", "xyz", "--api", server.url)
    assert code == 2 and "malformed block reference 'xyz'" in err
    code, _, err = _run(capsys, "chain", "round", "2", "--api", server.url)
    assert code == 1 and "round 2: no canonical block" in err


def test_no_node_answering(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = _run(capsys, "status", "--api", url)
    assert (code, out) == (1, "")
    assert f"no node answering at {url} — is it running? start it with `zkpot node start" in err

    port = free_port()
    (tmp_path / "config.toml").write_text(f"[api]\nport = {port}\n")
    code, _, err = _run(capsys, "peers", "--home", str(tmp_path))
    assert code == 1
    assert f"start it with `zkpot node start --home {tmp_path}`" in err


@pytest.mark.slow  # the installed console script, as a process
def test_console_script(server: Server) -> None:
    """The installed entry point, as a user runs it."""
    cmd = [sys.executable, "-m", "node.tools.cli", "chain", "block", "99", "--api", server.url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "zkpot: block 99 not found (head is at height 5)"


# ---------------------------------------------------------------------- model export


def test_model_export_state_dict(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "model.pt"
    code, out, err = _run(
        capsys, "model", "export", "--height", "3", "--out", str(out_file), "--api", server.url
    )
    assert code == 0, err
    assert "as state-dict" in out
    state = torch.load(out_file, weights_only=True)
    model = build_model(ARCH, 0)
    model.load_state_dict(state, strict=True)
    expected = model_from_bytes(ARCH, server.node.models[3]).state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_model_export_onnx(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import onnx

    out_file = tmp_path / "model.onnx"
    code, out, err = _run(
        capsys,
        "model",
        "export",
        "--height",
        "0",
        "--out",
        str(out_file),
        "--api",
        server.url,
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["format"] == "onnx" and result["architecture"] == ARCH
    graph = onnx.load(str(out_file)).graph
    onnx.checker.check_model(onnx.load(str(out_file)))
    assert [i.name for i in graph.input] == ["x"]


def test_model_export_errors(
    server: Server, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(
        capsys,
        "model",
        "export",
        "--height",
        "99",
        "--out",
        str(tmp_path / "m.pt"),
        "--api",
        server.url,
    )
    assert code == 1 and "block 99 not found (head is at height 5)" in err
    code, _, err = _run(
        capsys,
        "model",
        "export",
        "--height",
        "1",
        "--out",
        str(tmp_path / "no" / "m.pt"),
        "--api",
        server.url,
    )
    assert code == 2 and "does not exist" in err


def test_store_check_takes_the_home_like_every_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from storage import ChainStore

    home = Home(tmp_path / "home")
    home.path.mkdir()
    with ChainStore.open(home.store_dir) as store:
        store.init_genesis(hashlib.sha256(b"genesis").digest(), b"genesis")
    code, out, _ = _run(capsys, "store", "check", "--home", str(home.path), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["consistent"] and report["height"] == 0 and report["problems"] == []
    code, out, _ = _run(capsys, "store", "check", str(home.store_dir))  # the old form
    assert code == 0 and out.startswith("consistent: head")
    code, _, err = _run(capsys, "store", "check")
    assert code == 2 and "--home" in err


def test_a_bad_round_number_is_called_a_round(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["chain", "round", "abc"])
    assert "a round is a non-negative integer, not 'abc'" in capsys.readouterr().err
