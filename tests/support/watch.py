"""Watch every node's `/status` in the background: finality must only move forward, on one chain.

A test that disturbs a network (partitions, restarts, lossy links) starts a `FinalityWatch`
before the disturbance and asks it at the end: did any node's finalized block ever go
back or change at a height (`regressions`), and is every finalized block any node ever
reported on the chain the network ends with (`off_chain`)?
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Seen:
    t: float
    node: int
    head: tuple[int, str]  # (height, hash)
    finalized: tuple[int, str]
    peers: int


class FinalityWatch:
    def __init__(self, apis: Sequence[str], interval_s: float = 1.0) -> None:
        self.apis = list(apis)
        self.interval_s = interval_s
        self.log: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="finality-watch", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> FinalityWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=3.0) as client:
            while not self._stop.is_set():
                for i, api in enumerate(self.apis):
                    try:
                        s = client.get(f"{api}/status").json()
                        seen = Seen(
                            time.time(),
                            i,
                            (s["head"]["height"], s["head"]["hash"]),
                            (s["finalized"]["height"], s["finalized"]["hash"]),
                            s["peers"],
                        )
                    except (httpx.HTTPError, ValueError, KeyError, TypeError):
                        continue  # a node not up yet, or restarting
                    with self._lock:
                        self.log.append(seen)
                self._stop.wait(self.interval_s)

    def samples(self, node: int | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if node is None or s.node == node]

    def regressions(self) -> list[str]:
        """Every time a node's finalized block went lower, or changed at the same height."""
        out = []
        last: dict[int, Seen] = {}
        for s in self.samples():
            prev = last.get(s.node)
            if prev is not None and (
                s.finalized[0] < prev.finalized[0]
                or (s.finalized[0] == prev.finalized[0] and s.finalized[1] != prev.finalized[1])
            ):
                out.append(f"node{s.node}: finalized {prev.finalized} then {s.finalized}")
            last[s.node] = s
        return out

    def off_chain(self, canonical_hash: Callable[[int], str | None]) -> list[str]:
        """Finalized blocks some node reported that are not on the chain `canonical_hash` gives."""
        seen = {(s.finalized, s.node) for s in self.samples()}
        hashes: dict[int, str | None] = {}
        out = []
        for (height, h), node in sorted(seen):
            if height not in hashes:
                hashes[height] = canonical_hash(height)
            if hashes[height] != h:
                out.append(
                    f"node{node} finalized {h[:16]} at {height}; the chain has {hashes[height]}"
                )
        return out

    def as_dict(self) -> list[dict[str, Any]]:
        return [s.__dict__ for s in self.samples()]
