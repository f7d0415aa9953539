"""Separate hosts on one machine: network namespaces on a Linux bridge, cut and impaired at will.

`Lan(n)` makes n namespaces, each with one veth (`eth0`) on a bridge in the root
namespace and its own IPv4 address in a random 10.x.y.0/24; the bridge holds the
subnet's .1, so the test process reaches every host directly. Names carry a random
suffix, so parallel runs never meet. Needs root and iproute2 + iptables;
`unavailable()` says why not, for a skip.

- `popen(i, argv)` runs a process on host i (`ip netns exec`), `cmd(i, ...)` a command.
- `partition([0, 1], [2, 3])` drops every packet between hosts of different groups
  (an iptables DROP on each receiver's INPUT: no RST, no ICMP, no error for the sender,
  like a pulled cable, so open TCP connections hang rather than fail); `heal()` lifts it.
- `impair(delay_ms, loss)` delays and drops packets between hosts, on every link both
  ways: `tc netem` on each host's eth0 where the kernel has it, otherwise a random
  iptables `statistic` DROP on INPUT plus `support.netdelay` on an NFQUEUE on OUTPUT
  (this test machine's kernel lacks sch_netem). `backend` says which; `unimpair()`
  ends it. Traffic with the bridge address (the test process polling APIs) is spared
  under the NFQUEUE backend; netem delays it too.
- `close()` (also `with`, and at interpreter exit) kills whatever still runs in the
  namespaces and removes namespaces, veths and bridge, whatever state they are in.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from support import child_env

QUEUE = 7
# Our rules live in chains of their own; all drops happen on the receiving host's INPUT, so
# the sender's stack learns nothing (a DROP on OUTPUT would give it EPERM at once).
PART = "ZKPART"  # INPUT: the partition
LOSS = "ZKLOSS"  # INPUT, after the partition: random loss
DELAY = "ZKDELAY"  # OUTPUT: to the delaying NFQUEUE
DELAYER = [sys.executable, "-m", "support.netdelay"]


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


@functools.cache
def unavailable() -> str | None:
    """Why namespaces cannot be used here (a skip reason), or None if they can.

    Probed once per process: test modules ask at import time, for their skip marks.
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, pkg in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {pkg})"
    probe = f"zkprobe{secrets.token_hex(3)}"
    r = _sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` does not work here: {r.stderr.strip()}"
    _sh("ip", "netns", "del", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 under 10/8 that no route or address of this machine overlaps."""
    used = []
    for line in (
        _sh("ip", "-4", "-o", "route", "show", "table", "all").stdout.splitlines()
        + _sh("ip", "-4", "-o", "addr").stdout.splitlines()
    ):
        for word in line.split():
            with contextlib.suppress(ValueError):
                if "." in word and word[0].isdigit():
                    used.append(ipaddress.ip_network(word, strict=False))
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.{random.randrange(100, 255)}.{random.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet for the test network")


class Lan:
    """n hosts (network namespaces) on one bridge; see the module docstring."""

    def __init__(self, n: int) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"zk{tag}br"
        self.names = [f"zk{tag}n{i}" for i in range(n)]
        self.veths = [f"zk{tag}v{i}" for i in range(n)]
        subnet = _free_subnet()
        hosts = list(subnet.hosts())
        self.gateway = str(hosts[0])
        self.ips = [str(hosts[i + 1]) for i in range(n)]
        self.backend: str | None = None  # the impairment in force: "netem", "nfqueue" or None
        self._procs: list[subprocess.Popen[Any]] = []
        self._delayers: list[subprocess.Popen[str]] = []
        self._closed = False
        self._made_bridge = False
        self._made: list[int] = []
        atexit.register(self.close)
        try:
            self._build(subnet.prefixlen)
        except BaseException:
            self.close()
            raise

    def _build(self, prefix: int) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._made_bridge = True
        _sh("ip", "addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for i, (ns, veth) in enumerate(zip(self.names, self.veths, strict=True)):
            _sh("ip", "netns", "add", ns)
            self._made.append(i)
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "link", "set", veth, "master", self.bridge, "up")
            _sh("ip", "-n", ns, "addr", "add", f"{self.ips[i]}/{prefix}", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            chains = [f"-N {PART}", f"-N {LOSS}", f"-N {DELAY}"]
            jumps = [f"-A INPUT -j {PART}", f"-A INPUT -j {LOSS}", f"-A OUTPUT -j {DELAY}"]
            self._restore(i, chains + jumps)

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ processes

    def argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """`argv` as run on host i."""
        return ["ip", "netns", "exec", self.names[i], *argv]

    def popen(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process on host i (killed at `close` if still running)."""
        p = subprocess.Popen(self.argv(i, argv), **kw)
        self._procs.append(p)
        return p

    def cmd(self, i: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _sh(*self.argv(i, argv), check=check)

    def _restore(self, i: int, rules: list[str]) -> None:
        """Apply filter-table rules on host i in one iptables-restore transaction."""
        text = "*filter\n" + "".join(f"{r}\n" for r in rules) + "COMMIT\n"
        r = subprocess.run(
            self.argv(i, ["iptables-restore", "--noflush"]),
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode != 0:
            raise RuntimeError(f"iptables-restore on {self.names[i]} failed: {r.stderr.strip()}")

    # ------------------------------------------------------------------ partitions

    def partition(self, *groups: Sequence[int]) -> None:
        """Cut the network: hosts talk only to hosts of their own group (groups cover all)."""
        where = {i: g for g, members in enumerate(groups) for i in members}
        if sorted(where) != list(range(len(self.names))) or sum(map(len, groups)) != len(where):
            raise ValueError(f"groups {groups} must split hosts 0..{len(self.names) - 1}")
        for i in where:
            rules = [f"-F {PART}"]
            for j, g in where.items():
                if g != where[i]:
                    rules += [f"-A {PART} -s {self.ips[j]} -j DROP"]
            self._restore(i, rules)

    def heal(self) -> None:
        for i in range(len(self.names)):
            self._restore(i, [f"-F {PART}"])

    # ------------------------------------------------------------------ impairment

    def impair(self, delay_ms: int, loss: float) -> str:
        """Delay and drop (loss: 0..1) every packet a host sends to another; returns the backend."""
        self.unimpair()
        netem = ["root", "netem", "delay", f"{delay_ms}ms", "loss", f"{loss * 100:g}%"]
        r = self.cmd(0, "tc", "qdisc", "replace", "dev", "eth0", *netem, check=False)
        if r.returncode == 0:
            for i in range(1, len(self.names)):
                self.cmd(i, "tc", "qdisc", "replace", "dev", "eth0", *netem)
            self.backend = "netem"
            return self.backend
        self.backend = "nfqueue"
        for i in range(len(self.names)):
            # The delayer must be bound before packets are queued: an unbound queue drops.
            d = self.popen(
                i,
                [*DELAYER, "--queue", str(QUEUE), "--delay-ms", str(delay_ms)],
                stdout=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
            self._delayers.append(d)
            line = d.stdout.readline() if d.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"netdelay on {self.names[i]} did not start: {line!r}")
            self._restore(
                i,
                [
                    f"-A {LOSS} -i eth0 ! -s {self.gateway} -m statistic --mode random"
                    f" --probability {loss} -j DROP",
                    f"-A {DELAY} -o eth0 ! -d {self.gateway} -j NFQUEUE --queue-num {QUEUE}",
                ],
            )
        return self.backend

    def unimpair(self) -> None:
        for i in range(len(self.names)):
            self._restore(i, [f"-F {LOSS}", f"-F {DELAY}"])
            self.cmd(i, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        if self._delayers:
            time.sleep(0.5)  # let the packets they hold out: a closing queue drops them
            for d in self._delayers:
                _stop(d)
            self._delayers = []
        self.backend = None

    def check(self) -> None:
        """Raise if an impairment process died (its queue would then drop every packet)."""
        for d in self._delayers:
            if d.poll() is not None:
                raise AssertionError(f"netdelay exited with {d.returncode}: {d.args!r}")

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Remove everything this Lan made; safe to call at any point, and again."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for p in self._procs:
            _stop(p)
        for i in self._made:
            # anything else still in our namespace (e.g. a node's worker processes)
            pids = _sh("ip", "netns", "pids", self.names[i], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for i in self._made:
            _sh("ip", "link", "del", self.veths[i], check=False)
            _sh("ip", "netns", "del", self.names[i], check=False)
        if self._made_bridge:
            _sh("ip", "link", "del", self.bridge, check=False)


def _stop(p: subprocess.Popen[Any], grace_s: float = 10) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for stream in (p.stdout, p.stderr, p.stdin):
        if stream is not None:
            _close(stream)


def _close(stream: IO[Any]) -> None:
    with contextlib.suppress(OSError):
        stream.close()
