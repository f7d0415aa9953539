"""A read-only view of a node's state, shaped as JSON-ready dicts for the HTTP API.

(Over 300 lines on purpose: every JSON shape the API serves lives here, in one place.)

The API never touches the store, the round log or the p2p host directly: it asks this
view, so the JSON shapes live in one place and the daemon's objects stay private.
Bytes are hex strings; times are integer milliseconds; nothing here writes.

Threading: `block`, `head`, `blocks` and `model` only read the store and the (immutable)
genesis, so the API may run them in worker threads. `status`, `round`, `peers` and the
metrics collector read the round log and the peers callback, which the daemon mutates on
its trio thread: call those on that thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from consensus import evidence, rules, schedule
from consensus.crypto import HASH_LEN
from consensus.membership import KIND_NAMES
from consensus.strategy import RULES
from consensus.types import Block, Evidence, Genesis, chain_id
from node.metrics import ChainCollector
from node.roundlog import RoundLog, RoundRecord
from storage import BlockMeta, ChainStore

MAX_BLOCKS_PER_CALL = 100
# Heights are at most 2**62 by the wire schema; a longer decimal is malformed, not unknown.
_MAX_HEIGHT_DIGITS = 19

Json = dict[str, Any]


def parse_block_ref(ref: str) -> int | bytes:
    """A decimal height or a 64-hex-digit hash; anything else is the caller's mistake."""
    ref = ref.strip()
    if ref.isdecimal() and ref.isascii():
        if len(ref) > _MAX_HEIGHT_DIGITS:
            raise ValueError(f"block height {ref} is out of range")
        return int(ref)
    if len(ref) == 2 * HASH_LEN:
        try:
            return bytes.fromhex(ref)
        except ValueError:
            pass
    raise ValueError(
        f"malformed block reference {ref!r}: give a decimal height (e.g. 7) "
        f"or a {2 * HASH_LEN}-hex-digit block hash"
    )


@dataclass(frozen=True)
class _Tip:
    """A pointer (head or finalized) resolved to its hash and meta."""

    hash: bytes
    meta: BlockMeta


class NodeView:
    """Read-only JSON view over the store, genesis, round log and peers."""

    def __init__(
        self,
        store: ChainStore,
        genesis: Genesis,
        roundlog: RoundLog,
        *,
        peer_id: str,
        role: str | Callable[[], str],
        peers: Callable[[], list[dict[str, Any]]],
        now_ms: Callable[[], int] | None = None,
        name: str = "",
        addrs: Callable[[], list[str]] = list,
        current_round: Callable[[], int | None] | None = None,
        sync: Callable[[int], dict[str, Any]] | None = None,
        registry: CollectorRegistry,
        chain_metrics: bool = True,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = chain_id(genesis)
        self.roundlog = roundlog
        self.peer_id = peer_id
        self._role = role if callable(role) else (lambda: role)  # roles change with the roster
        self._peers = peers
        self.name = name  # the node's configured name (a testnet's node0, node1, ...)
        self._addrs = addrs  # where others reach it: full multiaddrs with /p2p/
        self._now_ms = now_ms if now_ms is not None else (lambda: time.time_ns() // 1_000_000)
        # The round the node is in (rounds end early); without a node, the slot's round.
        self._current_round = current_round or (
            lambda: schedule.slot_round(self.genesis, self._now_ms())
        )
        self._sync = sync or (lambda height: {"height": height, "peer_height": height})
        self.registry = registry
        self.chain_id = genesis.hash()
        if chain_metrics:
            registry.register(ChainCollector(self))

    # ------------------------------------------------------------------ pointers

    def _tip(self, block_hash: bytes) -> _Tip:
        meta = self.store.get_meta(block_hash)
        if meta is None:  # the store's invariants make this corruption, not a user error
            raise RuntimeError(f"block {block_hash.hex()} is a chain pointer but not stored")
        return _Tip(block_hash, meta)

    def head_height(self) -> int:
        return self._tip(self.store.head()).meta.height

    def finalized_height(self) -> int:
        return self._tip(self.store.finalized()).meta.height

    def _decode(self, block_hash: bytes, meta: BlockMeta) -> Block | None:
        """The block, or None for the genesis entry (its bytes are the genesis itself)."""
        if meta.height == 0:
            return None
        raw = self.store.get_block(block_hash)
        if raw is None:
            raise RuntimeError(f"block {block_hash.hex()} has a meta but no bytes in the store")
        return Block.decode(raw)

    # ------------------------------------------------------------------ blocks

    def _block_json(self, block_hash: bytes, meta: BlockMeta, fin_height: int) -> Json:
        canonical = self.store.canonical_hash(meta.height) == block_hash
        out: Json = {
            "hash": block_hash.hex(),
            "height": meta.height,
            "parent": meta.parent.hex(),
            "cumulative_score": meta.score,
            "canonical": canonical,
            "final": canonical and meta.height <= fin_height,
        }
        block = self._decode(block_hash, meta)
        if block is None:
            out.update(
                genesis=True,
                round=None,
                proposer=None,
                rank=None,
                score=0,
                model_hash=self.genesis.initial_model_hash.hex(),
                batch_index=None,
                commits=[],
                proofs=[],
            )
            return out
        parent_meta = self.store.get_meta(meta.parent)
        score = None if parent_meta is None else meta.score - parent_meta.score
        out.update(
            genesis=False,
            round=block.round,
            round_start_ms=schedule.slot_start(self.genesis, block.round),  # its latest start
            proposer=block.proposer.hex(),
            rank=block.rank,
            score=score,
            model_hash=block.model_hash.hex(),
            aggregate_hash=block.aggregate_hash.hex(),  # v6: M, when the model is a step from it
            velocity_hash=block.velocity_hash.hex(),
            members=[m.hex() for m in block.members],
            remainder=block.remainder.hex(),
            batch_index=block.reveal.batch.index,
            commits=[
                {"id": c.hash().hex(), "participant": c.participant.hex()} for c in block.commits
            ],
            proofs=[
                {"commit_id": p.commit_id.hex(), "participant": p.participant.hex(), "k": p.k}
                for p in block.proofs
            ],
            membership=[
                {"kind": KIND_NAMES[c.kind], "key": c.key.hex(), "from_round": c.from_round}
                for c in block.membership
            ],
            evidence=[_evidence_json(self.genesis, self.chain_id, ev) for ev in block.evidence],
        )
        return out

    def _resolve(self, ref: str) -> tuple[bytes, BlockMeta] | None:
        parsed = parse_block_ref(ref)
        if isinstance(parsed, int):
            found = self.store.canonical_hash(parsed)
            if found is None:
                return None
            block_hash = found
        else:
            block_hash = parsed
        meta = self.store.get_meta(block_hash)
        return None if meta is None else (block_hash, meta)

    def block(self, ref: str) -> Json | None:
        """A block by canonical height or by hash (any branch); None if unknown.

        Raises ValueError for a malformed ref, so the API can tell 400 from 404.
        """
        found = self._resolve(ref)
        if found is None:
            return None
        return self._block_json(found[0], found[1], self.finalized_height())

    def head(self) -> Json:
        head = self._tip(self.store.head())
        return self._block_json(head.hash, head.meta, self.finalized_height())

    def blocks(self, from_h: int | None = None, to_h: int | None = None) -> Json:
        """Canonical blocks from_h..to_h inclusive, at most MAX_BLOCKS_PER_CALL of them.

        Defaults: `to_h` is the head; `from_h` is MAX_BLOCKS_PER_CALL below `to_h`. When the
        range was capped, `next_from` says where to continue (else it is None).
        """
        head_h = self.head_height()
        if (from_h is not None and from_h < 0) or (to_h is not None and to_h < 0):
            raise ValueError("block heights must not be negative")
        if from_h is not None and to_h is not None and from_h > to_h:
            raise ValueError(f"empty range: from ({from_h}) is above to ({to_h})")
        if to_h is None:
            to_h = max(head_h, from_h or 0)  # from above the head: an empty page, not an error
        if from_h is None:
            from_h = max(0, min(to_h, head_h) - MAX_BLOCKS_PER_CALL + 1)
        last = min(to_h, head_h, from_h + MAX_BLOCKS_PER_CALL - 1)
        fin_h = self.finalized_height()
        items: list[Json] = []
        for height in range(from_h, last + 1):
            block_hash = self.store.canonical_hash(height)
            meta = None if block_hash is None else self.store.get_meta(block_hash)
            if block_hash is None or meta is None:
                break  # a reorg to a shorter branch raced us; return what is consistent
            items.append(self._block_json(block_hash, meta, fin_h))
        capped = last < min(to_h, head_h)
        return {
            "from": from_h,
            "to": to_h,
            "head_height": head_h,
            "blocks": items,
            "next_from": last + 1 if capped else None,
        }

    def canonical_block_of_round(self, rnd: int) -> tuple[bytes, BlockMeta, Block] | None:
        """Binary search: rounds strictly increase along a chain (check_block_header)."""
        lo, hi = 1, self.head_height()
        while lo <= hi:
            mid = (lo + hi) // 2
            block_hash = self.store.canonical_hash(mid)
            meta = None if block_hash is None else self.store.get_meta(block_hash)
            if block_hash is None or meta is None:
                hi = mid - 1  # the head moved back under us; search below
                continue
            block = self._decode(block_hash, meta)
            assert block is not None  # height >= 1
            if block.round == rnd:
                return block_hash, meta, block
            if block.round < rnd:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

    # ------------------------------------------------------------------ rounds

    def round(self, rnd: int) -> Json | None:
        """What this node saw of round `rnd`, plus its canonical block; None if neither.

        Raises ValueError for a round the genesis does not have.
        """
        total = self.genesis.eval_plan.num_batches
        if not schedule.round_exists(self.genesis, rnd):
            raise ValueError(f"round {rnd} does not exist: this chain has rounds 0..{total - 1}")
        rec = self.roundlog.get(rnd)
        found = self.canonical_block_of_round(rnd)
        if rec is None and found is None:
            return None
        opened = rec.opened_ms if rec is not None and rec.opened_ms is not None else None
        start = schedule.slot_start(self.genesis, rnd) if opened is None else opened
        out: Json = {
            "round": rnd,
            "start_ms": start,  # when this node opened it (else its slot: the latest start)
            "commit_deadline_ms": schedule.commit_deadline(self.genesis, start),
            "proof_deadline_ms": schedule.proof_deadline(self.genesis, start),
            "observed": rec is not None,
        }
        out.update((rec if rec is not None else RoundRecord(rnd)).to_json())
        if found is None:
            out["block"] = None
        else:
            out["block"] = self._block_json(found[0], found[1], self.finalized_height())
            block = self._decode(found[0], found[1])
            if not out["ranking"] and block is not None:  # a node that ranked nothing itself
                out["ranking"] = [
                    {"rank": r.rank, "participant": r.participant.hex(), "k": r.k}
                    for r in rules.rank_proofs(block.reveal.batch, block.proofs)
                ]
        return out

    def current_round(self) -> int | None:
        """The round this node is in; None before genesis."""
        return self._current_round()

    def rounds_seen(self) -> list[int]:
        return self.roundlog.rounds()

    # ------------------------------------------------------------------ status, peers

    def status(self) -> Json:
        head = self._tip(self.store.head())
        fin = self._tip(self.store.finalized())
        head_block = self._decode(head.hash, head.meta)
        now = self._now_ms()
        return {
            "chain_id": self.chain_id.hex(),
            "chain_name": self.genesis.chain_name,
            "peer_id": self.peer_id,
            "name": self.name,
            "addrs": self._addrs(),
            "role": self._role(),
            "head": {
                "hash": head.hash.hex(),
                "height": head.meta.height,
                "round": None if head_block is None else head_block.round,
                "score": head.meta.score,
            },
            "finalized": {"hash": fin.hash.hex(), "height": fin.meta.height},
            "time_ms": now,
            "round": self.current_round(),
            "rounds_total": self.genesis.eval_plan.num_batches,
            "round_ms": self.genesis.timing.round_ms,
            "task": f"{self.genesis.task.dataset}/{self.genesis.task.architecture}",
            "rule": self.genesis.rule.name,
            "aggregates": RULES[self.genesis.rule.name].aggregates,  # no members: parent kept
            "peers": len(self._peers()),
            "sync": self._sync(head.meta.height),
        }

    def peers(self) -> Json:
        peers = self._peers()
        return {"count": len(peers), "peers": peers}

    # ------------------------------------------------------------------ models

    def model(self, height: int, part: str = "model") -> tuple[str, bytes] | None:
        """(architecture, blob) of the canonical block at `height`; None if absent.
        `part` (MODEL_PARTS): the global model, or (v6) the aggregate it stepped from or
        the velocity after the step.

        Height 0 is the initial global model, present only if the node stored it.
        """
        if height < 0:
            raise ValueError("block heights must not be negative")
        if part not in MODEL_PARTS:
            raise ValueError(f"part must be one of {', '.join(MODEL_PARTS)}, not {part!r}")
        block_hash = self.store.canonical_hash(height)
        if block_hash is None:
            return None
        blob_hash = self.model_hash(block_hash, height, part)
        if not blob_hash:
            return None
        blob = self.store.get_blob(blob_hash)
        if blob is None:
            return None
        return self.genesis.task.architecture, blob

    def model_hash(self, block_hash: bytes, height: int, part: str = "model") -> bytes | None:
        if height == 0:
            return self.genesis.initial_model_hash if part == "model" else None
        meta = self.store.get_meta(block_hash)
        if meta is None:
            return None
        block = self._decode(block_hash, meta)
        if block is None:
            return None
        if part == "velocity":
            return block.velocity_hash or None
        if part == "aggregate":  # without a server step the aggregate is the model
            if not block.members:
                return None
            return block.aggregate_hash or block.model_hash
        return block.model_hash


MODEL_PARTS = ("model", "aggregate", "velocity")


def _evidence_json(genesis: Genesis, chain_id: bytes, ev: Evidence) -> Json:
    """What a block's evidence proves (it was checked when the block was applied)."""
    off = evidence.offence(genesis, chain_id, ev)
    return {"kind": evidence.KIND_NAMES[ev.kind], "offender": off.key.hex(), "round": off.round}
