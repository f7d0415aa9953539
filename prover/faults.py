"""Fault injection for tests: stall chosen jobs, to show a missed deadline costs one round;
make a participant a free-rider or a pair-mask liar; keep a participant's weights for a test to check.

`ZKPOT_FAULTS` is a comma-separated list of `JOB:N:SECONDS` entries: the N-th job of
class JOB (1-based) that this node's pools run sleeps SECONDS in its worker before it
starts, e.g. `Prove:2:60`. Off unless set; read when a pool is made. Malformed entries
are refused with the reason, so a typo never silently disables a test.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from consensus.bn254 import R

ENV = "ZKPOT_FAULTS"
FREE_RIDE_ENV = "ZKPOT_TEST_FREE_RIDE"  # "1": resubmit the global model, untrained
KEEP_WEIGHTS_ENV = "ZKPOT_TEST_KEEP_WEIGHTS"  # a directory: write each round's weights there
WRONG_MASK_KEY_ENV = "ZKPOT_TEST_WRONG_MASK_KEY"  # "1": mask with a key other than the committed


def free_rides() -> bool:
    """Test hook: this participant is a free-rider (it commits the parent model unchanged)."""
    return os.environ.get(FREE_RIDE_ENV) == "1"


def keep_weights_dir() -> Path | None:
    """Test hook: where this participant writes its trained weights (round-R.bin), so a
    test can recompute an aggregate from the members' own models. Off unless set."""
    value = os.environ.get(KEEP_WEIGHTS_ENV)
    return Path(value) if value else None


def mask_secret_used(secret: int) -> int:
    """Test hook: the mask key secret a member masks with. A liar (the hook on) masks
    with another key than the one its commit published, consistently, so its vector
    passes its own check and only its partners' commitments disagree (a pair dispute)."""
    if os.environ.get(WRONG_MASK_KEY_ENV) != "1":
        return secret
    return secret + 1 if secret + 1 < R else 1


@dataclass
class Faults:
    stalls: dict[tuple[str, int], float] = field(default_factory=dict)
    seen: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        stalls: dict[tuple[str, int], float] = {}
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            parts = entry.split(":")
            try:
                name, nth, seconds = parts[0], int(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                raise ValueError(
                    f"{ENV}: {entry!r} is not JOB:N:SECONDS (e.g. Prove:2:60)"
                ) from None
            if len(parts) != 3 or nth < 1 or seconds < 0:
                raise ValueError(f"{ENV}: {entry!r} is not JOB:N:SECONDS with N >= 1, SECONDS >= 0")
            stalls[(name, nth)] = seconds
        return cls(stalls)

    @classmethod
    def from_env(cls) -> Faults:
        return cls.parse(os.environ.get(ENV, ""))

    def stall_for(self, job_name: str) -> float:
        """Count one more job of this class; its stall in seconds (0: none)."""
        if not self.stalls:
            return 0.0
        self.seen[job_name] += 1
        return self.stalls.get((job_name, self.seen[job_name]), 0.0)
