"""How a node deviates from the honest protocol: test behaviours, all off in production.

An end-to-end test makes one node of a real network a free-rider, a pair-mask liar, or
a participant that keeps its weights where the test can recompute an aggregate. The
node reads these once, at start (node.daemon, from its environment), and hands the one
`Behaviour` value to the code that acts on it; nothing on a round's path reads the
environment. Job stalls (prover.faults) are the worker pool's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from consensus.bn254 import R

FREE_RIDE_ENV = "ZKPOT_TEST_FREE_RIDE"  # "1": resubmit the global model, untrained
KEEP_WEIGHTS_ENV = "ZKPOT_TEST_KEEP_WEIGHTS"  # a directory: write each round's weights there
WRONG_MASK_KEY_ENV = "ZKPOT_TEST_WRONG_MASK_KEY"  # "1": mask with a key other than the committed


@dataclass(frozen=True)
class Behaviour:
    free_ride: bool = False  # commit the parent model unchanged (untrained)
    keep_weights: Path | None = None  # write each round's trained weights (round-R.bin) here
    wrong_mask_key: bool = False  # mask with another key than the committed one

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Behaviour:
        keep = env.get(KEEP_WEIGHTS_ENV)
        return cls(
            free_ride=env.get(FREE_RIDE_ENV) == "1",
            keep_weights=Path(keep) if keep else None,
            wrong_mask_key=env.get(WRONG_MASK_KEY_ENV) == "1",
        )

    def mask_secret(self, secret: int) -> int:
        """The mask key secret a member masks with. A liar masks with another key than the
        one its commit published, consistently, so its vector passes its own check and
        only its partners' commitments disagree (a pair dispute)."""
        if not self.wrong_mask_key:
            return secret
        return secret + 1 if secret + 1 < R else 1


HONEST = Behaviour()
