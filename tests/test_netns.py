"""The namespace helper itself (support.netns): hosts reach each other, cuts cut, heals heal,
impairment delays and drops, and close leaves nothing behind. Real namespaces, real packets.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from support.netns import Lan, unavailable

pytestmark = [
    pytest.mark.slow,  # real namespaces and processes: not in the fast tier
    pytest.mark.skipif(bool(unavailable()), reason=unavailable() or ""),
]

PORT = 9999

# TCP echo (one byte per connection) and a UDP counter on host 2.
SERVER = f"""
import socket, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", {PORT}))
def udp():
    n = 0
    while True:
        data, addr = u.recvfrom(64)
        if data == b"count?":
            u.sendto(str(n).encode(), addr)
        else:
            n += 1
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT})); s.listen()
print("up", flush=True)
while True:
    c, _ = s.accept(); c.sendall(c.recv(1)); c.close()
"""

# Seconds for a TCP connect plus a one-byte round trip, or -1 if it timed out.
ROUND_TRIP = """
import socket, sys, time
t = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.sendall(b"x"); assert s.recv(1) == b"x"
    print(time.monotonic() - t)
except OSError:
    print(-1)
"""

UDP_BURST = """
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    u.sendto(b"p", (sys.argv[1], int(sys.argv[2]))); time.sleep(0.001)
"""


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(3) as lan:
        server = lan.popen(2, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        yield lan


def round_trip(lan: Lan, src: int, dst_ip: str, timeout: float = 2.0) -> float:
    out = lan.cmd(src, sys.executable, "-c", ROUND_TRIP, dst_ip, str(PORT), str(timeout))
    return float(out.stdout)


def test_hosts_reach_each_other_and_the_test_process_reaches_them(lan: Lan) -> None:
    assert 0 <= round_trip(lan, 0, lan.ips[2]) < 0.5
    assert 0 <= round_trip(lan, 1, lan.ips[2]) < 0.5
    # the root namespace, through the bridge's address
    out = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, lan.ips[2], str(PORT), "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 0 <= float(out.stdout) < 0.5


def test_partition_cuts_between_groups_only_and_heal_restores(lan: Lan) -> None:
    lan.partition([0], [1, 2])
    assert round_trip(lan, 0, lan.ips[2], timeout=1.5) == -1
    assert 0 <= round_trip(lan, 1, lan.ips[2]) < 0.5
    lan.heal()
    assert 0 <= round_trip(lan, 0, lan.ips[2]) < 0.5
    with pytest.raises(ValueError):
        lan.partition([0], [1])  # host 2 in no group


def test_impairment_delays_every_link_and_unimpair_ends_it(lan: Lan) -> None:
    lan.impair(delay_ms=150, loss=0.0)
    lan.check()
    # SYN out of host 0, SYN-ACK out of host 2, then the byte each way: 2 RTTs of 300 ms.
    t = round_trip(lan, 0, lan.ips[2], timeout=5)
    assert 0.55 <= t < 1.5, (lan.backend, t)
    lan.unimpair()
    assert 0 <= round_trip(lan, 0, lan.ips[2]) < 0.5


def test_impairment_drops_the_given_share_of_packets(lan: Lan) -> None:
    lan.impair(delay_ms=1, loss=0.3)
    sent = 600
    lan.cmd(1, sys.executable, "-c", UDP_BURST, lan.ips[2], str(PORT), str(sent))
    time.sleep(0.3)
    lan.unimpair()
    ask = "import socket,sys; u=socket.socket(2,2); u.settimeout(2); u.sendto(b'count?',(sys.argv[1],int(sys.argv[2]))); print(u.recv(64).decode())"
    got = int(lan.cmd(1, sys.executable, "-c", ask, lan.ips[2], str(PORT)).stdout)
    # 420 expected; the bounds are about 6 standard deviations wide.
    assert 350 <= got <= 490, (lan.backend, got)


def test_close_removes_namespaces_links_and_processes() -> None:
    lan = Lan(2)
    sleeper = lan.popen(0, ["sleep", "300"])
    lan.impair(delay_ms=10, loss=0.0)
    names, links = list(lan.names), [lan.bridge, *lan.veths]
    lan.close()
    lan.close()  # again: a no-op
    assert sleeper.poll() is not None
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names), listed
    for link in links:
        r = subprocess.run(["ip", "link", "show", link], capture_output=True, text=True)
        assert r.returncode != 0, r.stdout
