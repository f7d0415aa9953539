"""A stranger joins a running chain from scratch, on its own host.

Six real node processes (node0 publishes, node1..3 participate, node4..5 observe; the
e2e tests' tiny circuit; the best-share rule) run on hosts 0..5 of a Lan (support.netns:
a network namespace and IP each, one bridge). Host 6 knows only node0's address and the
chain id: `zkpot node init`
fetches the genesis from node0 over the bridge and `zkpot node start` fetches the
circuit artifacts and the initial model by their pinned hashes, re-verifies every
block it syncs, and then follows the chain live as an observer. `zkpot status`
through its API shows the role and sync progress. Peer discovery (the DHT) connects it
to all six nodes within a minute.

Then it asks to join (`zkpot participant request`), the publisher admits it
(`zkpot participant admit KEY --home node0`), and from the stated round on its
commits and proofs compete and it is a member of the private aggregates (every fresh
proof is kept: keep 100%), trained on its own data file;
later it leaves (`zkpot participant leave`) and the network goes on without it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.home import Home
from node.tools.testnet import init
from p2p import peer_id_from_seed
from support.e2e_util import small_net
from support.netns import Lan, unavailable
from support.nsnet import API_PORT, P2P_PORT, NsNet, addr_of, place_on

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")]

RUNNING = [0, 1, 2, 3, 4, 5]
NEWCOMER = 6
ROUND_S = 40  # four provers and seven nodes on two busy cores


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NsNet, Lan, Path]]:
    root = tmp_path_factory.mktemp("join") / "net"
    spec = dataclasses.replace(
        small_net(len(RUNNING)),
        participants=3,
        rule="best-share",
        keep_percent=100,  # every fresh proof is a member: the newcomer's too
        guard_members=0,
        round_seconds=ROUND_S,
    )
    with Lan(len(RUNNING) + 1) as lan:
        init(root, spec)
        net = NsNet(root, spec, lan)
        place_on(lan, net, len(RUNNING))
        for i in RUNNING:
            _discover(net.home(i).config_file)  # discovery is on in every node
            net.start(i)
        try:
            yield net, lan, root
        finally:
            net.stop()


def test_a_new_host_joins_with_node_init_and_follows(bed: tuple[NsNet, Lan, Path]) -> None:
    net, lan, root = bed
    net.wait(
        "two blocks on the running network",
        lambda: all((s := net.status(i)) and s["head"]["height"] >= 2 for i in RUNNING),
        timeout=300,
    )
    cid = net.status(0)["chain_id"]  # type: ignore[index]
    bootstrap = addr_of(lan, 0, net.home(0).load_key().seed)
    home = net.home(NEWCOMER).path
    ip = lan.ips[NEWCOMER]
    cli = [sys.executable, "-m", "node.tools.cli"]
    data = root / "newcomer-data.npz"  # its own training rows (here: a copy of node2's)
    shutil.copy(net.home(2).data_file, data)
    out = lan.cmd(
        NEWCOMER,
        *cli, "node", "init", "--home", str(home), "--bootstrap", bootstrap, "--chain-id", cid,
        "--listen", f"/ip4/{ip}/tcp/{P2P_PORT}", "--api-host", ip, "--api-port", str(API_PORT),
        "--data", str(data), "--json",
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["chain_id"] == cid and summary["role"] == "observer", summary
    assert Home(home).load_genesis().hash().hex() == cid
    # a second init into the same home is refused, with the reason
    again = lan.cmd(NEWCOMER, *cli, "node", "init", "--home", str(home), "--bootstrap",
                    bootstrap, "--chain-id", cid, check=False)  # fmt: skip
    assert again.returncode == 1 and "already a zkpot home" in again.stderr
    # and a wrong chain id is named as such, over the real network
    wrong = lan.cmd(NEWCOMER, *cli, "node", "init", "--home", str(root / "wrong"),
                    "--bootstrap", bootstrap, "--chain-id", "ab" * 32, check=False)  # fmt: skip
    assert wrong.returncode == 1 and "check --chain-id" in wrong.stderr, wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr  # no libp2p dump first

    _discover(Home(home).config_file)
    net.start(NEWCOMER)
    target = max(net.head(i)[0] for i in RUNNING)
    net.wait(
        f"the newcomer catches up to height {target}",
        lambda: (s := net.status(NEWCOMER)) is not None and s["head"]["height"] >= target,
        timeout=240,
    )
    st = net.status(NEWCOMER)
    assert st is not None and st["role"] == "observer" and st["sync"]["peer_height"] >= target
    # it was given node0's address only; the DHT finds the five others (issue 22: a
    # stranger's node stayed at one peer for life), each listed with a dialable address
    ids = {str(peer_id_from_seed(net.home(i).load_key().seed)) for i in RUNNING}
    net.wait(
        "the newcomer is connected to every node, not only its bootstrap peer",
        lambda: ids <= {p["peer_id"] for p in net.get(NEWCOMER, "/peers")["peers"]},
        timeout=60,
    )
    for p in net.get(NEWCOMER, "/peers")["peers"]:
        assert any(a.endswith("/p2p/" + p["peer_id"]) for a in p["addrs"]), p
    assert (Home(home).artifacts / "vk.key").is_file()  # fetched by hash from peers
    # ...and follows live: a block made after it caught up reaches it, the same as node0's
    net.wait(
        "the newcomer follows a new final block",
        lambda: (
            (s := net.status(NEWCOMER)) is not None
            and s["finalized"]["height"] > target
            and net.block_hash(NEWCOMER, target + 1) == net.block_hash(0, target + 1)
        ),
        timeout=300,
    )
    text = lan.cmd(NEWCOMER, *cli, "status", "--api", net.api(NEWCOMER)).stdout
    assert "observer" in text and "following" in text, text

    # admission: the newcomer asks, the publisher admits it from a stated round
    key = Home(home).load_key().public.hex()
    asked = _cli(*cli, "participant", "request", "--home", str(home))
    assert "accepted" in asked, asked
    net.wait(
        "the publisher's node holds the join request",
        lambda: key in {r["key"] for r in net.get(0, "/participants")["requests"]},
        timeout=60,
    )
    admitted = json.loads(
        _cli(*cli, "participant", "admit", key, "--home", str(net.home(0).path), "--json")
    )
    assert admitted["result"].startswith("accepted"), admitted
    net.wait(
        "a block carries the admission",
        lambda: any(t["key"] == key for t in net.get(0, "/participants")["participants"]),
        timeout=240,
    )
    joined = next(t for t in net.get(0, "/participants")["participants"] if t["key"] == key)
    since = joined["joined"]
    assert since == admitted["from_round"], (joined, admitted)  # the round admit printed
    listing = _cli(*cli, "chain", "participants", "--home", str(net.home(0).path))
    assert key in listing, listing
    # from that round on, its proofs compete and it is a member of the aggregates
    net.wait(
        f"a block of round >= {since} aggregates the newcomer's model",
        lambda: any(key in _members(net, h) for h in _heights(net, since)),
        timeout=480,
    )
    # leaving: the network goes on without it
    left = _cli(*cli, "participant", "leave", "--home", str(home), "--json")
    assert json.loads(left)["result"].startswith("accepted"), left
    net.wait(
        "a block carries the exit",
        lambda: (
            next(t for t in net.get(0, "/participants")["participants"] if t["key"] == key)["left"]
            is not None
        ),
        timeout=240,
    )
    gone = next(t for t in net.get(0, "/participants")["participants"] if t["key"] == key)["left"]
    net.wait(
        f"two blocks from round {gone} on, without the newcomer",
        lambda: (
            len(later := _heights(net, gone)) >= 2
            and all(key not in _provers(net, h) for h in later)
        ),
        timeout=420,
    )


def _discover(config: Path) -> None:
    """Peer discovery is on by default (`[p2p] target_peers = 16`): the test relies on it."""
    assert "target_peers = 16" in config.read_text()


def _cli(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{argv[3:]}: {done.stderr}"
    return done.stdout


def _heights(net: NsNet, from_round: int) -> list[int]:
    """Canonical heights on node0 of blocks from `from_round` on."""
    blocks = net.get(0, "/blocks")["blocks"]
    return [b["height"] for b in blocks if not b["genesis"] and b["round"] >= from_round]


def _members(net: NsNet, height: int) -> set[str]:
    return set(net.get(0, f"/blocks/{height}")["members"])


def _provers(net: NsNet, height: int) -> set[str]:
    return {p["participant"] for p in net.get(0, f"/blocks/{height}")["proofs"]}
