"""Fault injection for tests: stall chosen jobs, to show a missed deadline costs one round
(a node's other test behaviours are node.behaviour's).

`ZKPOT_FAULTS` is a comma-separated list of `JOB:N:SECONDS` entries: the N-th job of
class JOB (1-based) that this node's pools run sleeps SECONDS in its worker before it
starts, e.g. `Prove:2:60`. Off unless set; read when a pool is made. Malformed entries
are refused with the reason, so a typo never silently disables a test.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

ENV = "ZKPOT_FAULTS"


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
