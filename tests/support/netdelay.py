"""Delay every packet of an NFQUEUE queue by a fixed time: netem's delay for kernels without it.

Run inside a network namespace (netlink queues are per namespace), behind an iptables
rule `-j NFQUEUE --queue-num N`:

    ip netns exec NS python -m support.netdelay --queue N --delay-ms 200

The kernel hands us each packet's id only (copy mode "meta"); we give the verdict
ACCEPT once the delay has passed, in arrival order, so a flow's packets stay in order
as they do under netem. Plain netlink, no library: the test machine's kernel has
NFQUEUE but not sch_netem. Prints "ready" once bound, so the caller knows packets
queued from then on are released.
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
SO_RCVBUFFORCE = 33
NETLINK_NO_ENOBUFS = 5
SOL_NETLINK = 270
QUEUE_MAXLEN = 65536


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attrs
    return (
        struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body
    )


def _attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    i = 0
    while i + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[i + 4 : i + length]
        i += (length + 3) & ~3
    return out


class Queue:
    """One bound NFQUEUE queue: packet ids in, verdicts out."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))

    def _config(self, attrs: bytes) -> None:
        """Send one config message and raise if the kernel refuses it (e.g. queue taken)."""
        self.seq += 1
        self.sock.send(
            _message(NFQNL_MSG_CONFIG, self.queue, attrs, self.seq, NLM_F_REQUEST | NLM_F_ACK)
        )
        while True:
            data = self.sock.recv(65536)
            _, kind, _, seq, _ = struct.unpack_from("=IHHII", data, 0)
            if kind == NLMSG_ERROR and seq == self.seq:
                (err,) = struct.unpack_from("=i", data, 16)
                if err:
                    raise OSError(-err, f"NFQUEUE {self.queue} config refused")
                return

    def packet_ids(self) -> list[int]:
        """The ids of the packets in the datagrams waiting on the socket (non-blocking)."""
        ids: list[int] = []
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return ids
            i = 0
            while i + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, i)
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    hdr = _attrs(data[i + 20 : i + length]).get(NFQA_PACKET_HDR)
                    if hdr is not None:
                        ids.append(struct.unpack_from("!I", hdr)[0])
                i += (length + 3) & ~3

    def accept(self, ids: list[int]) -> None:
        """ACCEPT these packets, many verdicts per datagram."""
        for start in range(0, len(ids), 256):
            batch = b"".join(
                _message(
                    NFQNL_MSG_VERDICT,
                    self.queue,
                    _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, pid)),
                    0,
                )
                for pid in ids[start : start + 256]
            )
            self.sock.send(batch)


def run(queue: int, delay_s: float) -> None:
    q = Queue(queue)
    print("ready", flush=True)
    held: collections.deque[tuple[float, int]] = collections.deque()
    while True:
        now = time.monotonic()
        due = []
        while held and held[0][0] <= now:
            due.append(held.popleft()[1])
        if due:
            q.accept(due)
        wait = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        readable, _, _ = select.select([q.sock], [], [], wait)
        if readable:
            arrived = time.monotonic()
            held.extend((arrived + delay_s, pid) for pid in q.packet_ids())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queue", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run(args.queue, args.delay_ms / 1000)


if __name__ == "__main__":
    main()
