"""P2P across real OS processes on 127.0.0.1: relays in child processes, `kill -9`, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from consensus.types import CommitTx
from p2p import P2PHost, SyncClient, TopicKind
from support import REPO_ROOT, TESTS_DIR, child_env, free_port
from support.chainfactory import make_chain
from support.p2p_util import (
    absent,
    build_store,
    config,
    forged_commit,
    receive,
    running,
    wait_for,
)

CHAIN = make_chain()
NODE = TESTS_DIR / "support" / "p2p_node.py"


@contextmanager
def child(
    name: str, port: int, bootstrap: tuple[str, ...] = (), store: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    cmd = [sys.executable, str(NODE), "--name", name, "--port", str(port)]
    for b in bootstrap:
        cmd += ["--bootstrap", b]
    if store is not None:
        cmd += ["--store", str(store)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(), cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"child {name} exited with {proc.wait()}"
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


async def connected_both_ways(a: P2PHost, peer_id_str: str) -> None:
    await wait_for(
        lambda: any(str(p) == peer_id_str for p in a.gossip.topic_peers(TopicKind.ROUND))
    )


async def test_gossip_crosses_two_relay_processes_and_their_validators_stop_invalid() -> None:
    p1, p2 = free_port(), free_port()
    with child("proc1", p1) as (c1, i1), child("proc2", p2, (i1["addrs"][0],)) as (c2, i2):
        a = P2PHost(config("procA", bootstrap=(i1["addrs"][0],)), CHAIN.chain_id)
        c = P2PHost(config("procC", bootstrap=(i2["addrs"][0],)), CHAIN.chain_id)
        async with running([a, c]):
            await connected_both_ways(a, str(i1["peer_id"]))
            await connected_both_ways(c, str(i2["peer_id"]))
            assert not c.is_connected(a.peer_id)  # only through the two processes
            bad = forged_commit(CHAIN, 0, b"proc")
            await a.gossip.publish(bad)
            n = 0
            with trio.fail_after(60):  # the relay mesh forms on heartbeats: retry until through
                while True:
                    n += 1
                    good = CHAIN.commit(CHAIN.participants[1], 0, CHAIN.chain_id, b"p%d" % n)
                    await a.gossip.publish(good)
                    with trio.move_on_after(2):
                        d = await receive(c, lambda d: True)
                        break
            assert isinstance(d.item, CommitTx) and d.item != bad
            assert await absent(c, lambda d: d.item == bad, 2.0)
        assert c1.poll() is None and c2.poll() is None


@pytest.mark.slow
async def test_kill9_relay_then_restart_with_same_identity_restores_delivery() -> None:
    port = free_port()
    with child("relay", port) as (r1, info):
        relay_addr = str(info["addrs"][0])
        a = P2PHost(
            config("killA", bootstrap=(relay_addr,), reconnect_interval_s=0.5), CHAIN.chain_id
        )
        c = P2PHost(
            config("killC", bootstrap=(relay_addr,), reconnect_interval_s=0.5), CHAIN.chain_id
        )
        async with running([a, c]):
            await through(a, c, b"before")
            os.kill(r1.pid, signal.SIGKILL)
            r1.wait(30)
            relay = a.add_peer_addr(relay_addr)
            await wait_for(lambda: not a.is_connected(relay) and not c.is_connected(relay))
            # delivery is broken while the relay is down
            await a.gossip.publish(CHAIN.commit(CHAIN.participants[0], 0, CHAIN.chain_id, b"lost"))
            assert await absent(c, lambda d: True, 2.0)
            # a restart on the same port with the same key; A and C redial it by themselves
            with child("relay", port) as (r2, info2):
                assert info2["peer_id"] == info["peer_id"]
                await through(a, c, b"after")
                assert r2.poll() is None


async def through(a: P2PHost, c: P2PHost, tag: bytes) -> None:
    """Publish fresh messages from A until one reaches C (meshes re-form on heartbeats)."""
    n = 0
    with trio.fail_after(90):
        while True:
            n += 1
            tx = CHAIN.commit(CHAIN.participants[0], 0, CHAIN.chain_id, tag + b"%d" % n)
            await a.gossip.publish(tx)
            with trio.move_on_after(1):
                d = await receive(c, lambda d: True)
                assert isinstance(d.item, CommitTx) and d.item.binding
                return


async def test_late_peer_syncs_blocks_and_models_from_another_process(tmp_path: Path) -> None:
    store, blocks = build_store(tmp_path / "src", CHAIN, 4)
    model = store.get_blob(blocks[-1].model_hash)
    store.close()
    with child("server", free_port(), store=tmp_path / "src") as (_, info):
        late = P2PHost(config("latecomer", bootstrap=(str(info["addrs"][0]),)), CHAIN.chain_id)
        async with running([late]):
            server = next(iter(late._known))
            await wait_for(lambda: late.is_connected(server))
            client = SyncClient(late)
            async with client.session(server) as s:
                status = await s.status()
                entries = await s.blocks(1, status.height)
                got_model = await s.content(blocks[-1].model_hash)
            assert [e.block_hash for e in entries] == [b.hash() for b in blocks]
            assert got_model == model


async def test_a_frozen_peer_process_is_disconnected_by_keepalive_and_redialled_after() -> None:
    """SIGSTOP: the peer's kernel still ACKs, so only unanswered pings show it is gone."""
    with child("frozen", free_port()) as (proc, info):
        fast = {"ping_interval_s": 0.5, "ping_timeout_s": 0.5, "ping_failures": 2}
        a = P2PHost(config("freezeA", reconnect_interval_s=0.5, **fast), CHAIN.chain_id)
        async with running([a]):
            peer = await a.connect(str(info["addrs"][0]))
            await trio.sleep(1.5)  # pings answered: it stays
            assert a.is_connected(peer) and a.keepalive.closed == 0
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                start = trio.current_time()
                await wait_for(lambda: not a.is_connected(peer), 2 * (0.5 + 0.5) + 2)
                assert trio.current_time() - start <= 2 * (0.5 + 0.5) + 1.5
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            await wait_for(lambda: a.is_connected(peer), 20)  # the reconnect loop redials it
