"""The global model's accuracy on the public test split, per block, for the explorer's
learning curve. Reporting only: consensus never reads it. Computed in the worker pool
(never on the event loop) once per model, and only where the home holds the test
split's indices (a testnet home does; a node that joined from a bootstrap peer shows
no accuracy)."""

from __future__ import annotations

import logging
from pathlib import Path

from consensus.crypto import short
from node.interfaces import Prover
from node.memo import Memo
from prover.client import TestAccuracy
from prover.worker import WorkerError

log = logging.getLogger("zkpot.node")

MAX_CACHED = 4096


class AccuracyBoard:
    def __init__(self, pool: Prover, arch: str, dataset: str, test_index: Path) -> None:
        self.pool = pool
        self.arch = arch
        self.dataset = dataset
        self.test_index = test_index if test_index.is_file() else None
        self._ppm: Memo[bytes, int] = Memo(MAX_CACHED)  # by model hash

    async def of(self, model_hash: bytes, blob: bytes) -> float | None:
        if self.test_index is None:
            return None
        job = TestAccuracy(self.arch, self.dataset, str(self.test_index), blob)
        try:
            ppm = await self._ppm.get(model_hash, lambda: self.pool.run(job, timeout=60))
        except WorkerError as exc:
            log.info("no test accuracy for model %s: %s", short(model_hash, 12), exc)
            return None
        return ppm / 1_000_000
