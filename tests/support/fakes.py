"""Fakes of the world the node runtime talks to: clock, network, sync and prover.

They let the real node code (node.engine and the modules it wires) run several
nodes in one trio run, in virtual time (pytest-trio's autojump clock), with no
processes and no sockets: a round from commit to final block takes milliseconds.
The chain, its LevelDB store and every consensus rule are the real ones; only the
zk proof and the model are stand-ins (support.chainfactory's hash proofs),
so what these tests show is the node's logic, never that proving works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
from libp2p.peer.id import ID

from consensus import bn254, masking, optimizer, secagg
from consensus.aggregate import split_mean
from consensus.crypto import SigningKey, sha256
from consensus.secagg import MaskedUpdate
from consensus.types import AggregationSpec, Block, EvalBatch, Genesis, RuleSpec
from node.chain import Chain as NodeChain
from node.engine import Engine
from node.interfaces import Outgoing
from node.roundlog import RoundLog
from p2p import SyncError, TopicKind, Verdict
from p2p.gossip import Validator
from p2p.host import peer_id_from_seed
from p2p.sync import BlockEntry, Status
from prover.client import (
    Aggregate,
    CheckStep,
    CheckUpdate,
    Commit,
    Evaluate,
    Job,
    MaskCommitment,
    MaskVector,
    Prove,
    Proved,
    StepModel,
    Train,
    Verified,
    Verify,
)
from prover.client import CommitAggregate as CommitAggregateJob
from prover.worker import JobFailed, JobTimeout
from storage import ChainStore
from support.chainfactory import Chain, hash_proof, hash_verify, model_commitment

R = TypeVar("R")

INITIAL_MODEL = b"initial model"  # chainfactory's genesis pins sha256 of this


def fake_model(k: int, *salt: bytes) -> bytes:
    """A model blob that scores `k` on every batch (byte 0, as chainfactory's evaluator reads)."""
    return bytes([k]) + sha256(b"".join(salt))[:15]


FAKE_PARAMS = 16  # a fake model's parameters: its 16 bytes (fake_model), as integers
FAKE_BASIS = [bn254.mul(bn254.G, 101 + j) for j in range(FAKE_PARAMS)]
FAKE_K = bn254.mul(bn254.G, 97)


def fake_params(model: bytes) -> list[int]:
    """A fake model's parameters: its bytes, zero-padded to FAKE_PARAMS."""
    return list(model[:FAKE_PARAMS].ljust(FAKE_PARAMS, b"\0"))


def fake_linear(values: list[int]) -> bn254.Point:
    return bn254.msm(FAKE_BASIS, [v % bn254.R for v in values])


def fake_commitment(model: bytes) -> bytes:
    """C(q) = L(q) + K over the fake basis: affine, as ezkl's polycommit is (§10)."""
    return bn254.compress(bn254.add(fake_linear(fake_params(model)), FAKE_K))


def aggregating(genesis: Genesis) -> Genesis:
    """`genesis` under best-share over the fake basis (FakeProver(aggregating=True))."""
    return dataclasses.replace(
        genesis,
        rule=RuleSpec("best-share", 50, 3, 16, exclusion_rounds=4),
        aggregation=AggregationSpec(0, FAKE_PARAMS, sha256(b"fake basis"), bn254.compress(FAKE_K)),
    )


def _fake_mask(job: MaskVector) -> MaskedUpdate:
    q = [job.weight * v for v in fake_params(job.weights)]
    masks = secagg.member_masks(
        job.secret, job.me, job.others, job.context, FAKE_PARAMS, job.threshold
    )
    y = masking.masked(q, masks.pair_masks, masks.self_mask)
    pairs = tuple(bn254.compress(fake_linear(list(u))) for _, u in masks.pair_masks)
    self_c = bn254.compress(fake_linear(list(masks.self_mask)))
    return secagg.unsigned_update(
        job.context, job.me, secagg.encode_vector(y), pairs, self_c, masks
    )


def _fake_check(job: CheckUpdate) -> bool:
    upd = MaskedUpdate.decode(job.update)
    weighted = bn254.mul(bn254.sub(bn254.decompress(job.commitment), FAKE_K), job.weight)
    want = secagg.expected_update(
        weighted,
        [bn254.decompress(c) for c in upd.pair_commitments],
        job.signs,
        bn254.decompress(upd.self_commitment),
    )
    whole = secagg.whole_vector(upd, job.parts)
    return fake_linear(secagg.decode_vector(whole, FAKE_PARAMS)) == want


def _fake_mask_commitment(seed: bytes) -> bytes:
    return bn254.compress(fake_linear(masking.expand(seed, FAKE_PARAMS)))


def _fake_aggregate(job: Aggregate) -> tuple[bytes, bytes]:
    for member, seed, committed in zip(job.members, job.seeds, job.self_commitments, strict=True):
        if _fake_mask_commitment(seed) != committed:
            raise JobFailed(f"member {member.hex()[:8]}'s self seed does not open its commitment")
    vectors = [secagg.decode_vector(v, FAKE_PARAMS) for v in job.vectors]
    mean, rest = split_mean(secagg.unmasked_sum(vectors, job.seeds), job.weight_sum)
    return bytes(mean), bytes(rest)


def fake_step(job: StepModel | CheckStep) -> tuple[bytes, bytes]:
    """The server step on fake models: their bytes as parameters, G' clamped to a byte,
    except byte 0, the score the fake evaluator reads, which stays the aggregate's (a
    step would carry it out of the batch's range)."""
    g = fake_params(job.parent)
    v = optimizer.decode_velocity(job.velocity, FAKE_PARAMS)
    mean = fake_params(job.mean)
    g2, v2 = optimizer.step(g, v, mean, job.momentum)
    g2[0] = mean[0]
    return bytes(max(0, min(255, x)) for x in g2), optimizer.encode_velocity(v2)


def _fake_commit_aggregate(job: CommitAggregateJob) -> bytes:
    total = [job.weight_sum * m + r for m, r in zip(job.weights, job.remainder, strict=True)]
    return bn254.compress(bn254.add(fake_linear(total), FAKE_K))


@dataclass
class FakeProver:
    """Answers the typed prover jobs with hash stand-ins, taking `delay_s` of virtual time.

    A participant's data file is named `fake:K`: K is the k its trained models score.
    """

    delay_s: dict[type, float] = field(default_factory=dict)
    calls: list[Job[Any]] = field(default_factory=list)
    aggregating: bool = False  # commitments on the fake basis, and the masking jobs

    async def run(self, job: Job[R], *, timeout: float) -> R:
        self.calls.append(job)
        with trio.move_on_after(timeout) as scope:
            await trio.sleep(self.delay_s.get(type(job), 0.01))
        if scope.cancelled_caught:  # as the real pool: its worker would be killed
            raise JobTimeout(f"{type(job).__name__} overran its {timeout:.0f} s deadline")
        return self.answer(job)  # type: ignore[return-value]

    def answer(self, job: Job[Any]) -> object:
        if isinstance(job, Train):
            k = int(job.data_file.removeprefix("fake:"))
            return fake_model(k, job.global_weights, job.seed.to_bytes(8, "big"))
        if isinstance(job, Commit):
            return (
                fake_commitment(job.weights) if self.aggregating else model_commitment(job.weights)
            )
        if isinstance(job, MaskVector):
            return _fake_mask(job)
        if isinstance(job, CheckUpdate):
            return _fake_check(job)
        if isinstance(job, MaskCommitment):
            return _fake_mask_commitment(job.seed)
        if isinstance(job, Aggregate):
            return _fake_aggregate(job)
        if isinstance(job, CommitAggregateJob):
            return _fake_commit_aggregate(job)
        if isinstance(job, StepModel):
            return fake_step(job)
        if isinstance(job, CheckStep):
            return fake_step(job) == (job.model, job.new_velocity)
        if isinstance(job, Prove):
            batch = EvalBatch.decode(job.batch)
            k = job.weights[0]
            c = fake_commitment(job.weights) if self.aggregating else model_commitment(job.weights)
            return Proved(k, hash_proof(batch, c, k))
        if isinstance(job, Verify):
            ok = hash_verify(job.proof, EvalBatch.decode(job.batch), job.commitment, job.k)
            return Verified(ok, "" if ok else "hash proof does not match")
        if isinstance(job, Evaluate):
            return job.weights[0]
        raise TypeError(f"no fake for {type(job).__name__}")


class FakeGossip:
    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.validators: dict[TopicKind, Validator] = {}
        self.published: list[Outgoing] = []

    def set_validator(self, kind: TopicKind, validator: Validator) -> None:
        self.validators[kind] = validator

    async def publish(self, item: Outgoing) -> None:
        self.published.append(item)
        await self.net.network.deliver(self.net, item)


class FakeNet:
    """One node's host: a real peer id, a gossip endpoint, penalties recorded."""

    def __init__(self, network: FakeNetwork, seed: bytes) -> None:
        self.network = network
        self.peer_id: ID = peer_id_from_seed(seed)
        self.gossip = FakeGossip(self)
        self.penalties: list[tuple[ID | None, float, str]] = []
        self.node: FakeNode | None = None

    def connected_peers(self) -> list[ID]:
        return [n.peer_id for n in self.network.links_of(self)]

    def penalise(self, peer: ID | None, points: float, reason: str) -> None:
        self.penalties.append((peer, points, reason))


class FakeNetwork:
    """Full mesh with cuttable links; each delivery is its own task, like real gossip."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nets: list[FakeNet] = []
        self.cut: set[frozenset[ID]] = set()
        self.verdicts: list[tuple[str, str, Verdict]] = []  # (to, message, verdict)
        self.hold: Callable[[FakeNet, FakeNet, Outgoing], float] = lambda a, b, item: 0.0

    def add(self, seed: bytes) -> FakeNet:
        net = FakeNet(self, seed)
        self.nets.append(net)
        return net

    def links_of(self, net: FakeNet) -> list[FakeNet]:
        return [
            o
            for o in self.nets
            if o is not net and frozenset((o.peer_id, net.peer_id)) not in self.cut
        ]

    def partition(self, a: FakeNet, b: FakeNet) -> None:
        self.cut.add(frozenset((a.peer_id, b.peer_id)))

    async def deliver(self, src: FakeNet, item: Outgoing) -> None:
        kind = TopicKind.BLOCKS if isinstance(item, Block) else TopicKind.ROUND
        await self._validate(src, src, kind, item)  # a node validates its own publish too
        for dst in self.links_of(src):
            self.nursery.start_soon(
                self._validate, src, dst, kind, type(item).decode(item.encode())
            )

    async def _validate(self, src: FakeNet, dst: FakeNet, kind: TopicKind, item: Any) -> None:
        delay = self.hold(src, dst, item)
        if delay:
            await trio.sleep(delay)
        validator = dst.gossip.validators.get(kind)
        if validator is None:
            return
        verdict = await validator(item, item.encode(), src.peer_id)
        self.verdicts.append((str(dst.peer_id), type(item).__name__, verdict))

    async def node_of(self, peer: ID) -> FakeNode:
        """The node behind a peer; a net with no node is a silent peer: it never answers."""
        await trio.lowlevel.checkpoint()
        node = next(n.node for n in self.nets if n.peer_id == peer)
        if node is None:
            await trio.sleep_forever()
        assert node is not None
        return node


class FakeSync:
    """The sync protocol answered from the other fake nodes' real stores."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network

    async def _store(self, peer: ID) -> ChainStore:
        return (await self.network.node_of(peer)).chain.store

    async def status(self, peer: ID) -> Status:
        node = await self.network.node_of(peer)
        head = node.chain.node(node.chain.head)
        return Status(node.chain.chain_id, head.hash, head.height, head.score)

    async def blocks(self, peer: ID, start: int, count: int) -> list[BlockEntry]:
        store = await self._store(peer)
        out = []
        for height in range(start, start + count):
            h = store.canonical_hash(height)
            raw = store.get_block(h) if h is not None else None
            if h is None or raw is None:
                break
            out.append(BlockEntry(height, h, raw))
        return out

    async def content(self, peer: ID, content_hash: bytes) -> bytes:
        store = await self._store(peer)
        data = store.get_blob(content_hash) or store.get_block(content_hash)
        if data is None:
            raise SyncError(f"{peer} does not have {content_hash.hex()[:12]}")
        return data

    async def content_from_any(self, peers: list[ID], content_hash: bytes) -> bytes:
        for peer in peers:
            with trio.move_on_after(3):  # as the real client: a silent peer costs a deadline
                try:
                    return await self.content(peer, content_hash)
                except SyncError:
                    continue
        raise SyncError(f"no peer has {content_hash.hex()[:12]}")


@dataclass
class FakeNode:
    key: SigningKey
    net: FakeNet
    chain: NodeChain
    engine: Engine
    prover: FakeProver
    roundlog: RoundLog


def clock_at(genesis_ms: int, lead_ms: int = 1000) -> Callable[[], int]:
    """Wall-clock ms that reads `lead_ms` before genesis now and follows trio's (virtual) clock."""
    t0 = trio.current_time()
    return lambda: genesis_ms - lead_ms + int((trio.current_time() - t0) * 1000)


def make_node(
    network: FakeNetwork,
    chain: Chain,
    key: SigningKey,
    store_dir: Path,
    clock: Callable[[], int],
    *,
    k: int = 0,
    prover: FakeProver | None = None,
) -> FakeNode:
    """A node whose key decides its roles in `chain`'s genesis; a participant's models score k."""
    net = network.add(key.seed)
    node_chain = NodeChain(ChainStore.open(store_dir), chain.genesis, INITIAL_MODEL)
    prover = prover or FakeProver()
    roundlog = RoundLog()
    engine = Engine(
        key=key,
        chain=node_chain,
        net=net,
        sync=FakeSync(network),
        prover=prover,
        verifier=prover,
        artifacts=store_dir / "artifacts",
        roundlog=roundlog,
        data_file=f"fake:{k}",
        batches=chain.batches,
        verify_timeout_s=30,
        prove_timeout_s=30,
        clock=clock,
    )
    node = FakeNode(key, net, node_chain, engine, prover, roundlog)
    net.node = node
    return node


Starter = Callable[[], Awaitable[None]]


async def until(done: Callable[[], bool], within_s: float) -> None:
    """Poll `done` in virtual time; fail if it does not hold within `within_s`."""
    with trio.fail_after(within_s):
        while not done():
            await trio.sleep(0.05)


def canonical(node: FakeNode) -> list[Block]:
    """A node's canonical chain, first block first."""
    out = []
    h = node.chain.head
    while h != node.chain.chain_id:
        block = node.chain.block(h)
        assert block is not None
        out.append(block)
        h = block.parent
    return out[::-1]
