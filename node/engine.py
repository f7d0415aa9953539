"""The ZKPoT round loop and the handlers of gossip and sync: the node's behaviour.

Per round r (consensus.schedule): participants train from the head's model and
gossip a commit before the commit deadline; the publisher reveals batch r and the
sealed commits at the deadline; sealed participants prove and gossip proof txs;
every node verifies them; from the proof deadline the rank-i participant proposes
at its fallback time if no valid block for its parent has arrived. Blocks are
validated completely (Chain.validate) before fork choice sees them.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from libp2p.peer.id import ID

from consensus import rules, schedule
from consensus.crypto import SigningKey, sha256
from consensus.errors import ConsensusError, ForkChoiceError, InvalidError
from consensus.merkle import merkle_proof
from consensus.rules import sign
from consensus.types import Block, CommitTx, EvalBatch, ProofTx, Reveal
from node.chain import Chain, ProofChecker
from node.roundlog import ProofSeen, RoundLog
from p2p import BlockAnnounce, P2PHost, SyncClient, SyncError, TopicKind, Verdict
from p2p.gossip import GossipItem
from p2p.host import public_key_of
from prover.client import Commit, Prove, Train
from prover.train import fresh_seed
from prover.worker import WorkerError, WorkerPool

log = logging.getLogger("zkpot.node")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RoundState:
    commits: dict[bytes, CommitTx] = field(default_factory=dict)
    received_ms: dict[bytes, int] = field(default_factory=dict)
    reveal: Reveal | None = None
    revealed: trio.Event = field(default_factory=trio.Event)
    proofs: dict[bytes, ProofTx] = field(default_factory=dict)  # commit id -> valid proof
    mine: tuple[bytes, CommitTx, bytes] | None = None  # (weights, commit, C)
    # parent -> best (k, tiebreak) of the valid blocks seen for it this round
    blocks: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)


@dataclass
class Roles:
    participant: bool
    publisher: bool

    @property
    def name(self) -> str:
        parts = [
            n for n, on in (("participant", self.participant), ("publisher", self.publisher)) if on
        ]
        return "+".join(parts) or "observer"


class Engine:
    def __init__(
        self,
        *,
        key: SigningKey,
        chain: Chain,
        host: P2PHost,
        prover: WorkerPool,
        verifier: WorkerPool,
        artifacts: Path,
        roundlog: RoundLog,
        shard: bytes | None,
        dataset_path: str | None,
        batches: list[EvalBatch] | None,
        verify_timeout_s: float,
        prove_timeout_s: float,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.key = key
        self.chain = chain
        self.genesis = chain.genesis
        self.cid = chain.cid
        self.host = host
        self.prover = prover
        self.verifier = verifier
        self.artifacts = artifacts
        self.roundlog = roundlog
        self.shard = shard
        self.dataset_path = dataset_path or None
        self.batches = batches
        self.verify_timeout_s = verify_timeout_s
        self.prove_timeout_s = prove_timeout_s
        self.clock = clock
        self.roles = Roles(
            key.public in self.genesis.participants, key.public == self.genesis.publisher
        )
        if self.roles.participant and shard is None:
            raise ValueError("a participant needs its training shard")
        if self.roles.publisher and not batches:
            raise ValueError("the publisher needs the held-out batches")
        self.checker = ProofChecker(verifier, artifacts, verify_timeout_s)
        self.sync = SyncClient(host)
        self.rounds: dict[int, RoundState] = {}
        self.own_blocks: set[bytes] = set()  # our own publishes pass our validator
        # commits whose parent block is not applied yet: (participant, round, parent) -> (tx, arrival)
        self.held_commits: dict[tuple[bytes, int, bytes], tuple[CommitTx, int]] = {}
        self.refused: OrderedDict[bytes, str] = OrderedDict()  # invalid/unplaceable blocks
        self._sync_wanted = trio.Event()
        host.gossip.set_validator(TopicKind.ROUND, self._validate_round_msg)
        host.gossip.set_validator(TopicKind.BLOCKS, self._validate_block_msg)

    # ------------------------------------------------------------------ state

    def mark(self, rnd: int, step: str) -> None:
        """Record when this node reached `step` of round `rnd` (first time only)."""
        times = self.roundlog.record(rnd).times_ms
        times.setdefault(step, self.clock() - schedule.round_start(self.genesis, rnd))

    def state(self, rnd: int) -> RoundState:
        """Round state; created only for rounds near the clock (see `in_window`)."""
        st = self.rounds.get(rnd)
        if st is None:
            st = self.rounds[rnd] = RoundState()
        return st

    def in_window(self, rnd: int) -> bool:
        """Rounds a peer's message may touch: the clock's round, one before and one after.

        Peers choose round numbers freely; without this bound one message could
        create state for any round (memory) or, worse, evict the live round's state.
        """
        now = schedule.round_at(self.genesis, self.clock())
        cur = 0 if now is None else now
        return cur - 2 <= rnd <= cur + 1

    def _prune(self, rnd: int) -> None:
        """Driven by the clock only, never by a peer-supplied round."""
        for old in [r for r in self.rounds if r < rnd - 8]:
            del self.rounds[old]

    @staticmethod
    def _better(a: tuple[int, bytes], b: tuple[int, bytes]) -> bool:
        """Block quality for abstaining: higher k, then lower tie-break."""
        return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])

    def _note_block(self, rnd: int, block: Block) -> None:
        st = self.rounds.get(rnd)
        if st is None:
            return
        k = next((p.k for p in block.proofs if p.participant == block.proposer), 0)
        key = (k, rules.tiebreak_key(block.reveal.batch.hash(), block.proposer))
        best = st.blocks.get(block.parent)
        if best is None or self._better(key, best):
            st.blocks[block.parent] = key

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain_inbox)
            nursery.start_soon(self._sync_loop)
            await self._round_loop()
            nursery.cancel_scope.cancel()

    async def _sleep_until(self, t_ms: int) -> None:
        delay = (t_ms - self.clock()) / 1000
        if delay > 0:
            await trio.sleep(delay)

    async def _round_loop(self) -> None:
        g = self.genesis
        await self._sleep_until(g.timing.genesis_ms)
        while True:
            rnd = schedule.round_at(g, self.clock())
            assert rnd is not None
            self._prune(rnd)
            if not schedule.round_exists(g, rnd):
                log.info(
                    "evaluation plan exhausted after %d rounds; following only",
                    g.eval_plan.num_batches,
                )
                await trio.sleep_forever()
            # Joining mid-round: take part only if the commit deadline is still ahead.
            if self.clock() < schedule.commit_deadline(g, rnd) - 1:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._play_round, rnd)
                    await self._sleep_until(schedule.round_start(g, rnd + 1))
                    nursery.cancel_scope.cancel()
            else:
                await self._sleep_until(schedule.round_start(g, rnd + 1))

    async def _play_round(self, rnd: int) -> None:
        async with trio.open_nursery() as nursery:
            if self.roles.participant:
                nursery.start_soon(self._participate, rnd)
            if self.roles.publisher:
                nursery.start_soon(self._publish_reveal, rnd)

    # ------------------------------------------------------------------ participant

    async def _participate(self, rnd: int) -> None:
        g = self.genesis
        st = self.state(rnd)
        rec = self.roundlog.record(rnd)
        parent = self.chain.head
        deadline = schedule.commit_deadline(g, rnd)
        assert self.shard is not None  # __init__ refuses a participant without one
        try:
            global_model = self.chain.model_of(parent)
        except LookupError as exc:
            rec.notes.append(f"no global model to train from: {exc}")
            log.error("round %d: cannot train: %s", rnd, exc)
            return
        try:
            with trio.fail_after(max(0.0, (deadline - self.clock()) / 1000)):
                weights = await self.prover.run(
                    Train(
                        g.task.architecture,
                        global_model,
                        g.task.dataset,
                        self.dataset_path,
                        self.shard,
                        g.task.local_epochs,
                        g.task.train_batch_size,
                        g.task.learning_rate_ppm,
                        fresh_seed(),
                    ),
                    timeout=self.prove_timeout_s,
                )
                self.mark(rnd, "trained")
                c = await self.prover.run(
                    Commit(str(self.artifacts), g.task.architecture, weights),
                    timeout=self.prove_timeout_s,
                )
        except trio.TooSlowError:
            rec.notes.append("missed the commit deadline: skipping this round")
            log.warning("round %d: training and commitment missed the deadline; skipping", rnd)
            return
        except WorkerError as exc:
            rec.notes.append(f"training failed: {exc}")
            log.error("round %d: training failed: %s", rnd, exc)
            return
        binding = rules.commit_binding(self.cid, self.key.public, rnd, parent, c)
        commit = sign(
            CommitTx(rnd, parent, self.key.public, binding, bytes(64)), self.key, self.cid
        )
        st.mine = (weights, commit, c)
        self._record_commit(rnd, commit)
        self.mark(rnd, "committed")
        await self._publish(commit)
        log.info(
            "round %d: committed %s on parent %s", rnd, commit.hash().hex()[:12], parent.hex()[:12]
        )
        # Prove once the batch is revealed, then propose at our rank's time.
        with trio.move_on_after(max(0.0, (schedule.proof_deadline(g, rnd) - self.clock()) / 1000)):
            await st.revealed.wait()
        if st.reveal is None:
            rec.notes.append("no reveal before the proof deadline")
            return
        if commit.hash() not in st.reveal.sealed:
            rec.notes.append("our commit was not sealed by the publisher")
            log.warning("round %d: our commit was not sealed", rnd)
            return
        try:
            with trio.fail_after(max(0.0, (schedule.proof_deadline(g, rnd) - self.clock()) / 1000)):
                proved = await self.prover.run(
                    Prove(
                        str(self.artifacts), g.task.architecture, weights, st.reveal.batch.encode()
                    ),
                    timeout=self.prove_timeout_s,
                )
            k, proof = proved.k, proved.proof
        except (trio.TooSlowError, WorkerError) as exc:
            rec.notes.append(f"proving failed or was late: {exc!r}")
            log.warning("round %d: proving failed or missed the deadline: %r", rnd, exc)
            return
        tx = sign(
            ProofTx(rnd, commit.hash(), self.key.public, c, k, proof, bytes(64)), self.key, self.cid
        )
        self.mark(rnd, "proved")
        st.proofs[commit.hash()] = tx
        rec.proofs[commit.hash()] = ProofSeen(self.key.public, commit.hash(), k, True)
        await self._publish(tx)
        log.info("round %d: proved k=%d", rnd, k)
        await self._propose_when_due(rnd)

    def _ranking(self, rnd: int, parent: bytes) -> list[rules.Ranked]:
        st = self.state(rnd)
        proofs = [
            p
            for cid, p in st.proofs.items()
            if cid in st.commits and st.commits[cid].parent == parent
        ]
        assert st.reveal is not None
        return rules.rank_proofs(st.reveal.batch, proofs)

    async def _propose_when_due(self, rnd: int) -> None:
        g = self.genesis
        st = self.state(rnd)
        assert st.mine is not None and st.reveal is not None
        weights, commit, _ = st.mine
        parent = commit.parent
        for rank in range(1, g.timing.max_rank + 1):
            await self._sleep_until(schedule.proposal_time(g, rnd, rank))
            ranking = self._ranking(rnd, parent)
            self.roundlog.record(rnd).ranking = [(r.rank, r.participant, r.k) for r in ranking]
            mine = next((r for r in ranking if r.participant == self.key.public), None)
            if mine is None or mine.k < 1:
                return
            best = st.blocks.get(parent)
            my_key = (mine.k, rules.tiebreak_key(st.reveal.batch.hash(), self.key.public))
            if best is not None and not self._better(my_key, best):
                return  # a block at least as good as ours already exists for this parent
            if mine.rank == rank:
                await self._propose(rnd, rank, ranking, weights)
                return

    async def _propose(
        self, rnd: int, rank: int, ranking: list[rules.Ranked], weights: bytes
    ) -> None:
        st = self.state(rnd)
        assert st.reveal is not None and st.mine is not None
        parent = st.mine[1].parent
        pinfo = self.chain.parent_info(parent)
        if pinfo is None:
            return
        ids = sorted(r.commit_id for r in ranking)
        block = Block(
            rnd,
            parent,
            pinfo.height + 1,
            self.key.public,
            rank,
            st.reveal,
            tuple(st.commits[i] for i in ids),
            tuple(st.proofs[i] for i in ids),
            sha256(weights),
            bytes(64),
        )
        block = sign(block, self.key, self.cid)
        raw = block.encode()
        try:
            score = await self.chain.validate(
                block, weights, self.checker, self.verifier, self.verify_timeout_s
            )
            applied = await self.chain.apply(block, raw, weights, score)
        except (InvalidError, ForkChoiceError) as exc:
            log.error("round %d: our own block is invalid, not proposing: %s", rnd, exc)
            return
        self._note_block(rnd, block)
        self.own_blocks.add(applied.block_hash)
        self._release_commits(applied.block_hash)
        self.mark(rnd, "proposed")
        self.mark(rnd, "block")
        self._record_block(rnd, block, applied.block_hash)
        log.info(
            "round %d: proposed block %s at height %d (rank %d)",
            rnd,
            applied.block_hash.hex()[:12],
            applied.height,
            rank,
        )
        await self._publish(block)

    # ------------------------------------------------------------------ publisher

    async def _publish_reveal(self, rnd: int) -> None:
        g = self.genesis
        assert self.batches is not None
        deadline = schedule.commit_deadline(g, rnd)
        await self._sleep_until(deadline)
        st = self.state(rnd)
        first: dict[bytes, bytes] = {}
        for cid, c in sorted(st.commits.items(), key=lambda kv: st.received_ms[kv[0]]):
            if st.received_ms[cid] <= deadline and c.participant not in first:
                first[c.participant] = cid
        leaves = [b.hash() for b in self.batches]
        reveal = Reveal(
            rnd,
            self.batches[rnd],
            tuple(merkle_proof(leaves, rnd)),
            tuple(sorted(first.values())),
            bytes(64),
        )
        reveal = sign(reveal, self.key, self.cid)
        self._on_reveal(reveal)
        await self._publish(reveal)
        log.info("round %d: revealed batch %d sealing %d commits", rnd, rnd, len(first))

    # ------------------------------------------------------------------ gossip in

    async def _publish(self, item: CommitTx | Reveal | ProofTx | Block) -> None:
        try:
            await self.host.gossip.publish(item)
        except Exception as exc:  # no peers yet, or backpressure timed out
            log.warning("could not gossip %s: %s", item.NAME, exc)

    def _record_commit(self, rnd: int, c: CommitTx, received_ms: int | None = None) -> None:
        st = self.state(rnd)
        cid = c.hash()
        if cid not in st.commits:
            st.commits[cid] = c
            st.received_ms[cid] = self.clock() if received_ms is None else received_ms
            self.roundlog.record(rnd).commits[cid] = c.participant

    def _hold_commit(self, c: CommitTx) -> None:
        """Bounded: at most one held commit per (participant, round, parent), 1024 in all."""
        key = (c.participant, c.round, c.parent)
        if key not in self.held_commits and len(self.held_commits) < 1024:
            self.held_commits[key] = (c, self.clock())

    def _release_commits(self, parent: bytes) -> None:
        """A block just applied: commits that were waiting for it as their parent count now."""
        for key in [k for k in self.held_commits if k[2] == parent]:
            c, received = self.held_commits.pop(key)
            if not self.in_window(c.round):
                continue
            st = self.state(c.round)
            if not any(
                o.participant == c.participant and o.parent == c.parent for o in st.commits.values()
            ):
                self._record_commit(c.round, c, received)
        for key in [k for k in self.held_commits if not self.in_window(k[1])]:
            del self.held_commits[key]

    def _on_reveal(self, reveal: Reveal) -> None:
        st = self.state(reveal.round)
        if st.reveal is None:
            self.mark(reveal.round, "revealed")
            st.reveal = reveal
            rec = self.roundlog.record(reveal.round)
            rec.revealed, rec.sealed, rec.batch_index = True, reveal.sealed, reveal.batch.index
            st.revealed.set()

    def _record_block(self, rnd: int, block: Block, h: bytes) -> None:
        rec = self.roundlog.record(rnd)
        if self.chain.head == h or rec.block is None:
            rec.block, rec.proposer = h, block.proposer

    async def _validate_round_msg(self, item: GossipItem, forwarder: ID) -> Verdict:
        if forwarder == self.host.peer_id:
            return Verdict.ACCEPT  # our own publish: already recorded and checked
        try:
            if isinstance(item, CommitTx):
                rules.check_commit(self.genesis, self.cid, item)
                if not self.in_window(item.round):
                    return Verdict.IGNORE
                if not self.chain.has(item.parent):
                    # Its parent may be a block we are still validating: keep it (with
                    # its arrival time, which decides sealing) until that block applies.
                    self._hold_commit(item)
                    return Verdict.IGNORE
                st = self.state(item.round)
                if item.hash() not in st.commits and any(
                    c.participant == item.participant and c.parent == item.parent
                    for c in st.commits.values()
                ):
                    return Verdict.IGNORE  # one commit per participant, round and parent
                self._record_commit(item.round, item)
                return Verdict.ACCEPT
            if isinstance(item, Reveal):
                rules.check_reveal(self.genesis, self.cid, item)
                if not self.in_window(item.round):
                    return Verdict.IGNORE
                first = self.state(item.round).reveal
                if first is not None and first != item:
                    log.warning(
                        "publisher equivocation: a second, different reveal for round %d",
                        item.round,
                    )
                    self.roundlog.record(item.round).notes.append(
                        "publisher equivocated: second reveal refused"
                    )
                    return Verdict.REJECT
                self._on_reveal(item)
                return Verdict.ACCEPT
            if isinstance(item, ProofTx):
                st_or_none = self.rounds.get(item.round) if self.in_window(item.round) else None
                if st_or_none is None:
                    return Verdict.IGNORE
                st = st_or_none
                commit = st.commits.get(item.commit_id)
                if st.reveal is None or commit is None or item.commit_id in st.proofs:
                    return Verdict.IGNORE  # unknown context, or a valid proof is already held
                # Cheap checks first (the verifier stub passes), then the zk verification.
                rules.check_proof_tx(
                    self.genesis, self.cid, st.reveal, commit, item, lambda *a: True
                )
                seen = ProofSeen(item.participant, item.commit_id, item.k, None)
                self.roundlog.record(item.round).proofs[item.commit_id] = seen
                ok, reason = await self.checker.check(
                    item.proof, st.reveal.batch, item.commitment, item.k
                )
                if not ok:
                    seen.valid, seen.reason = False, reason
                    raise InvalidError(f"ProofTx: {reason}")
                st.proofs[item.commit_id] = item
                seen.valid = True
                self.mark(item.round, f"proof_verified:{item.participant.hex()[:8]}")
                return Verdict.ACCEPT
            return Verdict.REJECT
        except InvalidError as exc:
            log.info("rejected %s from %s: %s", type(item).__name__, forwarder, exc)
            return Verdict.REJECT

    async def _validate_block_msg(self, item: GossipItem, forwarder: ID) -> Verdict:
        if isinstance(item, BlockAnnounce):
            return Verdict.IGNORE  # blocks above the inline limit come by sync
        if not isinstance(item, Block):
            return Verdict.REJECT
        raw = item.encode()
        h = sha256(raw)
        if forwarder == self.host.peer_id and h in self.own_blocks:
            return Verdict.ACCEPT  # our own block, already validated and applied
        if self.chain.has(h) or h in self.refused:
            return Verdict.IGNORE
        if not self.chain.has(item.parent):
            self._sync_wanted.set()
            return Verdict.IGNORE
        if not self.chain.forks.descends_from(item.parent, self.chain.forks.finalized):
            self._refuse(h, "conflicts with finality")
            return Verdict.IGNORE
        try:
            pinfo = self.chain.parent_info(item.parent)
            if pinfo is None:
                return Verdict.IGNORE
            rules.check_block_header(self.genesis, self.cid, pinfo, item)
            if self.in_window(item.round):
                self.mark(item.round, "block_received")
            model = await self._fetch_blob(
                item.model_hash, [forwarder, *self._peers_with_pubkey(item.proposer)]
            )
            ok = await self._validate_and_apply(item, raw, model)
        except InvalidError as exc:
            self._refuse(h, str(exc))
            log.info("rejected block %s from %s: %s", h.hex()[:12], forwarder, exc)
            return Verdict.REJECT
        except SyncError as exc:
            log.info("block %s: model not available yet: %s", h.hex()[:12], exc)
            return Verdict.IGNORE
        return Verdict.ACCEPT if ok else Verdict.IGNORE

    def _refuse(self, block_hash: bytes, reason: str) -> None:
        """Remember refused blocks (bounded) so no peer makes us validate one twice."""
        self.refused[block_hash] = reason
        while len(self.refused) > 4096:
            self.refused.popitem(last=False)

    def _peers_with_pubkey(self, pub: bytes) -> list[ID]:
        return [p for p in self.host.connected_peers() if public_key_of(p) == pub]

    async def _fetch_blob(self, blob_hash: bytes, peers: list[ID]) -> bytes:
        blob = self.chain.store.get_blob(blob_hash)
        if blob is not None:
            return blob
        peers = list(dict.fromkeys([*peers, *self.host.connected_peers()]))
        return await self.sync.content_from_any(peers, blob_hash)

    async def _validate_and_apply(self, block: Block, raw: bytes, model: bytes) -> bool:
        score = await self.chain.validate(
            block, model, self.checker, self.verifier, self.verify_timeout_s
        )
        try:
            applied = await self.chain.apply(block, raw, model, score)
        except ForkChoiceError as exc:
            self._refuse(sha256(raw), str(exc))
            log.info("block not taken by fork choice: %s", exc)
            return False
        self._note_block(block.round, block)
        self._release_commits(sha256(raw))
        st = self.rounds.get(block.round)
        if st is not None:  # a live round: the block's txs count as seen
            if applied.head_changed:
                self.mark(block.round, "block")
            if st.reveal is None or st.reveal == block.reveal:
                for p in block.proofs:
                    st.proofs.setdefault(p.commit_id, p)
                for c in block.commits:
                    self._record_commit(block.round, c)
            self._record_block(block.round, block, applied.block_hash)
        log.info(
            "round %d: block %s at height %d by %s (k=%d)%s",
            block.round,
            applied.block_hash.hex()[:12],
            applied.height,
            block.proposer.hex()[:8],
            score,
            " -> new head" if applied.head_changed else "",
        )
        return True

    async def _drain_inbox(self) -> None:
        # Validators already acted on every accepted message; the inbox only needs draining.
        async for _ in self.host.gossip.inbox:
            pass

    # ------------------------------------------------------------------ sync

    async def _sync_loop(self) -> None:
        while True:
            with trio.move_on_after(3):
                await self._sync_wanted.wait()
            self._sync_wanted = trio.Event()
            for peer in list(self.host.connected_peers()):
                try:
                    with trio.move_on_after(300):  # one slow peer must not stall catching up
                        await self._sync_from(peer)
                except (SyncError, ConsensusError, WorkerError) as exc:
                    log.info("sync from %s failed: %s", peer, exc)
                except Exception:  # a bug here must never end the node
                    log.exception("sync from %s failed unexpectedly", peer)

    async def _sync_from(self, peer: ID) -> None:
        status = await self.sync.status(peer)
        my_score = self.chain.forks.node(self.chain.head).score
        if status.score <= my_score or self.chain.has(status.head):
            return
        start = self.chain.forks.node(self.chain.forks.finalized).height + 1
        while start <= status.height:
            entries = await self.sync.blocks(peer, start, min(64, status.height - start + 1))
            if not entries:
                return
            for e in entries:
                if self.chain.has(e.block_hash):
                    continue
                if e.block_hash in self.refused:
                    return
                raw = e.raw or await self.sync.content(peer, e.block_hash)
                if sha256(raw) != e.block_hash:
                    self.host.penalise(peer, 50.0, "sync block does not match its hash")
                    return
                block = Block.decode(raw)
                try:
                    # Cheap checks before downloading the model or verifying anything.
                    pinfo = self.chain.parent_info(block.parent)
                    if pinfo is None or not self.chain.forks.descends_from(
                        block.parent, self.chain.forks.finalized
                    ):
                        self._refuse(e.block_hash, "parent unknown or below finality")
                        return
                    rules.check_block_header(self.genesis, self.cid, pinfo, block)
                    model = await self._fetch_blob(block.model_hash, [peer])
                    if not await self._validate_and_apply(block, raw, model):
                        return
                except InvalidError as exc:
                    self._refuse(e.block_hash, str(exc))
                    self.host.penalise(peer, 50.0, f"served an invalid block: {exc}")
                    return
            start = entries[-1].height + 1
