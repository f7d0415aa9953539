"""P2P benchmark: 2-hop gossip latency, sustained gossip rate without loss, sync throughput.

Real hosts on 127.0.0.1 in one process (so all share one event loop and CPU: numbers
are a floor). Prints a table and writes bench/results/p2p.json.

    .venv/bin/python bench/p2p.py [--messages 200] [--burst 3000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]  # run as a script: import this checkout

from consensus import rules  # noqa: E402
from consensus.crypto import SigningKey, sha256  # noqa: E402
from consensus.types import CommitTx  # noqa: E402
from p2p import (  # noqa: E402
    Delivered,
    HostConfig,
    P2PHost,
    SyncClient,
    SyncServer,
    TopicKind,
)
from storage import ChainStore  # noqa: E402

CHAIN_ID = sha256(b"zkpot p2p bench")  # any chain: gossip here checks the decode only
KEY = SigningKey(sha256(b"zkpot p2p bench key"))


def commit(tag: bytes) -> CommitTx:
    """A signed commit, distinct per tag (gossip drops repeated messages)."""
    binding = sha256(tag)
    tx = CommitTx(0, CHAIN_ID, KEY.public, binding)
    return rules.sign(tx, KEY, CHAIN_ID)


def host(name: str) -> P2PHost:
    return P2PHost(HostConfig(seed=sha256(b"bench/" + name.encode())), CHAIN_ID)


@asynccontextmanager
async def running(hosts: list[P2PHost]) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for h in hosts:
            await stack.enter_async_context(h.run())
        yield


async def connect_line(hosts: list[P2PHost]) -> None:
    """h0 - h1 - h2, once every link is in both topics' meshes."""
    for a, b in itertools.pairwise(hosts):
        await b.connect(a.addrs[0])
    with trio.fail_after(60):
        for a, b in itertools.pairwise(hosts):
            while not all(
                b.peer_id in a.gossip.mesh_peers(k) and a.peer_id in b.gossip.mesh_peers(k)
                for k in TopicKind
            ):
                await trio.sleep(0.05)


async def receive(inbox: trio.MemoryReceiveChannel[Delivered], timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        await inbox.receive()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def gossip_bench(messages: int, burst: int) -> dict[str, float]:
    hosts = [host(f"bench{i}") for i in range(3)]
    inbox = hosts[2].gossip.listen()
    async with running(hosts):
        await connect_line(hosts)
        lat: list[float] = []
        for i in range(messages):
            tx = commit(b"lat%d" % i)
            t0 = time.perf_counter()
            await hosts[0].gossip.publish(tx)
            await receive(inbox)
            lat.append((time.perf_counter() - t0) * 1000)
        txs = [commit(b"rate%d" % i) for i in range(burst)]
        got = 0

        async def consume() -> None:
            nonlocal got
            while got < burst:
                await receive(inbox, timeout=60)
                got += 1

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for tx in txs:
                await hosts[0].gossip.publish(tx)
        elapsed = time.perf_counter() - t0
        return {
            "latency_2hop_median_ms": statistics.median(lat),
            "latency_2hop_p95_ms": pct(lat, 95),
            "sustained_msgs_per_s": burst / elapsed,
            "sustained_lost": burst - got,
            "sustained_messages": burst,
        }


async def stream_bench(tmp: Path) -> dict[str, float]:
    store = ChainStore.open(tmp / "store")
    out: dict[str, float] = {}
    try:
        sizes = {"1MB": 1024 * 1024, "20MB": 20 * 1024 * 1024}
        hashes = {k: store.put_blob(os.urandom(n)) for k, n in sizes.items()}
        hosts = [host(f"sbench{i}") for i in range(2)]
        SyncServer(hosts[0], store)
        async with running(hosts):
            await hosts[1].connect(hosts[0].addrs[0])
            client = SyncClient(hosts[1])
            for k, n in sizes.items():
                best = 0.0
                for _ in range(3):
                    t0 = time.perf_counter()
                    data = await client.content(hosts[0].peer_id, hashes[k])
                    dt = time.perf_counter() - t0
                    assert len(data) == n
                    best = max(best, n / dt / 1e6)
                out[f"stream_{k}_MBps"] = best
    finally:
        store.close()
    return out


async def main(args: argparse.Namespace) -> None:
    results = await gossip_bench(args.messages, args.burst)
    with tempfile.TemporaryDirectory() as tmp:
        results.update(await stream_bench(Path(tmp)))
    results["cpu_count"] = os.cpu_count() or 0
    width = max(len(k) for k in results)
    print(f"{'metric':<{width}}  value")
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.2f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    out = ROOT / "bench" / "results" / "p2p.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--burst", type=int, default=3000)
    trio.run(main, parser.parse_args())
