"""What a node saw of each round, for inspection (`/rounds/{r}`): not consensus state.

The round loop records commits, the reveal, proofs with their verdicts, the
ranking and the winning block as they happen; the API reads it. Bounded: only
the most recent `keep` rounds are held.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProofSeen:
    participant: bytes
    commit_id: bytes
    k: int
    valid: bool | None = None  # None: not verified yet
    reason: str = ""


@dataclass
class RoundRecord:
    round: int
    commits: dict[bytes, bytes] = field(default_factory=dict)  # commit id -> participant
    revealed: bool = False
    sealed: tuple[bytes, ...] = ()
    batch_index: int | None = None
    proofs: dict[bytes, ProofSeen] = field(default_factory=dict)  # commit id -> proof
    ranking: list[tuple[int, bytes, int]] = field(default_factory=list)  # (rank, participant, k)
    block: bytes | None = None  # hash of the block adopted for this round
    proposer: bytes | None = None
    accuracy_ppm: int | None = None  # new global model on the public test split (reporting only)
    notes: list[str] = field(default_factory=list)
    opened_ms: int | None = None  # when this node opened the round (deadlines count from it)
    # When this node saw each step, in ms since the round started (for bench/round.py).
    times_ms: dict[str, int] = field(default_factory=dict)
    # Aggregation messages this node accepted, by type, and those it refused (rejected as
    # invalid) under "refused:<type>": what an operator (and a test) sees of an attack.
    aggregation: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as the API shows it: bytes as hex."""
        rec = self
        ranking = [{"rank": r, "participant": p.hex(), "k": k} for r, p, k in rec.ranking]
        winner = None
        if rec.block is not None or rec.proposer is not None:
            winner = {
                "block": None if rec.block is None else rec.block.hex(),
                "proposer": None if rec.proposer is None else rec.proposer.hex(),
            }
        return {
            "times_ms": dict(rec.times_ms),
            "aggregation": dict(sorted(rec.aggregation.items())),
            "commits": [{"id": c.hex(), "participant": p.hex()} for c, p in rec.commits.items()],
            "reveal": {
                "revealed": rec.revealed,
                "batch_index": rec.batch_index,
                "sealed": [s.hex() for s in rec.sealed],
            },
            "proofs": [
                {
                    "commit_id": commit_id.hex(),
                    "participant": p.participant.hex(),
                    "k": p.k,
                    "valid": p.valid,
                    "reason": p.reason,
                }
                for commit_id, p in rec.proofs.items()
            ],
            "ranking": ranking,
            "winner": winner,
            "accuracy_ppm": rec.accuracy_ppm,
            "accuracy": None if rec.accuracy_ppm is None else rec.accuracy_ppm / 1_000_000,
            "notes": list(rec.notes),
        }


class RoundLog:
    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._rounds: OrderedDict[int, RoundRecord] = OrderedDict()

    def get(self, rnd: int) -> RoundRecord | None:
        return self._rounds.get(rnd)

    def record(self, rnd: int) -> RoundRecord:
        """The record of round `rnd`, created on first use; old rounds fall off."""
        rec = self._rounds.get(rnd)
        if rec is None:
            rec = self._rounds[rnd] = RoundRecord(rnd)
            while len(self._rounds) > self.keep:
                self._rounds.popitem(last=False)
        return rec

    def rounds(self) -> list[int]:
        return list(self._rounds)
