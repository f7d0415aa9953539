"""The e2e harness on separate hosts: node I runs on host I of a support.netns Lan, with
its own IP on one bridge; it listens, announces, bootstraps and serves its API there."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from p2p import peer_id_from_seed
from support import child_env
from support.e2e_util import Net
from support.netns import Lan

P2P_PORT = 27100  # the same on every host: each has its own IP
API_PORT = 8645


class NsNet(Net):
    """The e2e harness with node I on host I of a Lan, its API on that host's IP."""

    def __init__(self, root: Path, spec: Any, lan: Lan) -> None:
        super().__init__(root, spec)
        self.lan = lan

    def api(self, i: int) -> str:
        return f"http://{self.lan.ips[i]}:{API_PORT}"

    def start(self, i: int) -> None:
        cmd = [sys.executable, "-m", "node.tools.cli", "node", "start", "--home"]
        with (self.home(i).path / "node.log").open("ab") as log:
            self.procs[i] = self.lan.popen(
                i,
                [*cmd, str(self.home(i).path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(),
            )

    def head(self, i: int) -> tuple[int, str]:
        s = self.status(i)
        assert s is not None, f"node{i} does not answer: {self.tail(i)}"
        return s["head"]["height"], s["head"]["hash"]

    def block_hash(self, i: int, height: int) -> str | None:
        r = self.client.get(f"{self.api(i)}/blocks/{height}")
        return r.json()["hash"] if r.status_code == 200 else None

    def wait(self, what: str, cond: Any, timeout: float) -> None:
        """Poll `cond()` until true; fail with every node's status and log tail if not."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.lan.check()
            for i, p in self.procs.items():
                assert p.poll() is None, f"node{i} died: {self.tail(i)}"
            if cond():
                return
            time.sleep(1)
        sts = {i: self.status(i) for i in self.procs}
        tails = "\n".join(f"--- node{i}\n{self.tail(i)}" for i in self.procs)
        raise AssertionError(f"{what}: not within {timeout:.0f} s\n{json.dumps(sts)}\n{tails}")


def addr_of(lan: Lan, i: int, seed: bytes) -> str:
    return f"/ip4/{lan.ips[i]}/tcp/{P2P_PORT}/p2p/{peer_id_from_seed(seed)}"


def place_on(lan: Lan, net: Net, nodes: int) -> None:
    """Rewrite every home for its host: listen, announce and serve the API on the host's IP."""
    homes = [net.home(i) for i in range(nodes)]
    addrs = [addr_of(lan, i, h.load_key().seed) for i, h in enumerate(homes)]
    for i, home in enumerate(homes):
        cfg = dataclasses.replace(
            home.load_config(),
            listen=(f"/ip4/{lan.ips[i]}/tcp/{P2P_PORT}",),
            bootstrap=tuple(a for j, a in enumerate(addrs) if j != i),
            api_host=lan.ips[i],
            api_port=API_PORT,
        )
        home.config_file.write_text(cfg.to_toml())
