"""Shared harness of the end-to-end tests: a testnet's node processes and their APIs."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from node.home import Home
from node.tools.netspec import TestnetSpec
from node.tools.testnet import start_node, stop_nodes


def small_net(nodes: int) -> TestnetSpec:
    """The e2e tests' network: three participants, the tiny circuit, short rounds, free ports
    (one free range: the API ports follow the p2p ports, so the two never overlap)."""
    base = free_base(2 * nodes)
    return TestnetSpec(
        nodes=nodes,
        participants=3,
        task="digits-mlp-tiny",
        round_seconds=24,
        eval_batch=4,
        rounds=30,
        logrows=13,
        start_delay_s=25,
        # the scenarios are timed for 24 s rounds; init's estimate (every proof one after
        # another, with a busy core) would ask for more than these tests need
        allow_short_rounds=True,
        p2p_base_port=base,
        api_base_port=base + nodes,
    )


def free_base(span: int) -> int:
    """`span` consecutive free ports below the kernel's ephemeral range (32768 and up on
    Linux), which outgoing connections take at random: a port picked there can be taken
    by the time a node binds it (seen: a node's API port, in CI)."""
    for _ in range(50):
        base = random.randrange(20000, 32700 - span)
        ok = True
        for port in range(base, base + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


class Net:
    def __init__(self, root: Path, spec: TestnetSpec) -> None:
        self.root = root
        self.spec = spec
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.client = httpx.Client(timeout=5.0)

    def home(self, i: int) -> Home:
        return Home(self.root / f"node{i}")

    def api(self, i: int) -> str:
        return f"http://127.0.0.1:{self.spec.api_base_port + i}"

    def start(self, i: int, env: dict[str, str] | None = None) -> None:
        self.procs[i] = start_node(self.home(i), env)

    def kill9(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            return self.client.get(f"{self.api(i)}/status").json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return None

    def get(self, i: int, path: str) -> Any:
        r = self.client.get(f"{self.api(i)}{path}")
        r.raise_for_status()
        return (
            r.json()
            if r.headers.get("content-type", "").startswith("application/json")
            else r.content
        )

    def wait_finalized(self, nodes: list[int], height: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i in nodes:
                p = self.procs[i]
                assert p.poll() is None, f"node{i} died: {self.tail(i)}"
            sts = [self.status(i) for i in nodes]
            if all(s and s["finalized"]["height"] >= height for s in sts):
                return
            time.sleep(1)
        raise AssertionError(
            f"nodes {nodes} did not finalize height {height}: {sts}\n{self.tail(nodes[-1])}"
        )

    def tail(self, i: int) -> str:
        return "".join((self.home(i).path / "node.log").read_text().splitlines(True)[-25:])

    def stop(self) -> None:
        stop_nodes(self.procs.values())
        self.client.close()
