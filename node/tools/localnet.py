"""A local testnet's node processes and their APIs, driven from Python.

The end-to-end tests and the round benchmark (bench/round.py) start node processes
from homes `testnet init` wrote, kill or stop them, and read their APIs; this is
that one handle, and `free_base` finds them a free range of ports.
"""

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

PORT_LOW, PORT_HIGH = 20000, 32700  # below Linux's ephemeral range (32768 and up)


def free_base(span: int) -> int:
    """`span` consecutive free ports below the kernel's ephemeral range, which outgoing
    connections take at random: a port picked there can be taken by the time a node
    binds it (seen: a node's API port, in CI)."""
    for _ in range(50):
        base = random.randrange(PORT_LOW, PORT_HIGH - span)
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
    raise RuntimeError(f"no {span} free consecutive ports between {PORT_LOW} and {PORT_HIGH}")


class LocalNet:
    """The nodes of one testnet directory (node0, node1, ...), each its own process."""

    def __init__(self, root: Path, spec: TestnetSpec) -> None:
        self.root = root
        self.spec = spec
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.client = httpx.Client(timeout=10.0)

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
        """The node's /status, or None while its API does not answer."""
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
        """Until every node in `nodes` has finalized `height`; RuntimeError if one dies,
        TimeoutError if they do not within `timeout` seconds."""
        deadline = time.time() + timeout
        sts: list[dict[str, Any] | None] = []
        while time.time() < deadline:
            for i in nodes:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"node{i} died: {self.tail(i)}")
            sts = [self.status(i) for i in nodes]
            if all(s and s["finalized"]["height"] >= height for s in sts):
                return
            time.sleep(1)
        raise TimeoutError(
            f"nodes {nodes} did not finalize height {height}: {sts}\n{self.tail(nodes[-1])}"
        )

    def accuracy(self, i: int, rnd: int, timeout: float = 120) -> float:
        """Round `rnd`'s block model's test accuracy as node i reports it, once measured
        (the API answers without it while it is: node.accuracy)."""
        deadline = time.time() + timeout
        while True:
            acc = self.get(i, f"/rounds/{rnd}").get("accuracy")
            if acc is not None:
                return float(acc)
            if time.time() > deadline:
                raise TimeoutError(f"node{i} reports no accuracy for round {rnd}")
            time.sleep(1)

    def tail(self, i: int) -> str:
        """The last lines of the node's log (for a failure's message)."""
        return "".join((self.home(i).path / "node.log").read_text().splitlines(True)[-25:])

    def stop(self) -> None:
        stop_nodes(self.procs.values())
        self.client.close()
