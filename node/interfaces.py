"""What the node's runtime needs of the world: the clock, the network, sync and the prover.

The roles, the round-message pool and the block importer are written against these
small protocols, so the same code runs on the real libp2p host and worker pool
(node.daemon) and on fakes in unit tests (tests/support/fakes.py) in virtual time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import trio
from libp2p.peer.id import ID

from consensus.secagg import AggMessage
from consensus.types import Block, CommitTx, Evidence, JoinRequest, Membership, ProofTx, Reveal
from p2p.gossip import TopicKind, Validator
from p2p.sync import BlockEntry, Status
from prover.client import Job

R = TypeVar("R")

Clock = Callable[[], int]  # wall-clock milliseconds
Outgoing = CommitTx | Reveal | ProofTx | Block | AggMessage | JoinRequest | Membership | Evidence
Publish = Callable[[Outgoing], Awaitable[None]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def sleep_until(clock: Clock, t_ms: int) -> None:
    delay = (t_ms - clock()) / 1000
    if delay > 0:
        await trio.sleep(delay)


class Prover(Protocol):
    async def run(self, job: Job[R], *, timeout: float) -> R: ...


class GossipLike(Protocol):
    def set_validator(self, kind: TopicKind, validator: Validator) -> None: ...

    async def publish(self, item: Outgoing) -> None: ...


class Net(Protocol):
    @property
    def peer_id(self) -> ID: ...

    @property
    def gossip(self) -> GossipLike: ...

    def connected_peers(self) -> list[ID]: ...

    def penalise(self, peer: ID | None, points: float, reason: str) -> None: ...


class Sync(Protocol):
    async def status(self, peer: ID) -> Status: ...

    async def blocks(self, peer: ID, start: int, count: int) -> list[BlockEntry]: ...

    async def content(self, peer: ID, content_hash: bytes) -> bytes: ...

    async def content_from_any(self, peers: list[ID], content_hash: bytes) -> bytes: ...
