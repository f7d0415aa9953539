"""The global model's accuracy on the public test split, per block, for the explorer's
learning curve. Reporting only: consensus never reads it. Computed in the worker pool
(never on the event loop) once per model, and only where the home holds the test
split's indices (a testnet home does; a node that joined from a bootstrap peer shows
no accuracy).

A reader never waits long: the pool is the one proofs use, and a job queued behind a
proof can wait for minutes on a busy machine, while an API client gives up after
seconds (CI saw `GET /rounds/N` time out so). A read waits at most `wait_s`, then
answers without the accuracy; the measurement goes on in the board's own nursery, one
job at a time so reporting never crowds out consensus work, and the next read finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from consensus.crypto import short
from node.interfaces import Prover
from node.memo import Memo
from prover.client import TestAccuracy
from prover.worker import WorkerError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger("zkpot.node")

MAX_CACHED = 4096
WAIT_S = 2.0  # how long a read waits for a measurement under way before answering without
JOB_TIMEOUT_S = 60


class AccuracyBoard:
    def __init__(
        self, pool: Prover, arch: str, dataset: str, test_index: Path, wait_s: float = WAIT_S
    ) -> None:
        self.pool = pool
        self.arch = arch
        self.dataset = dataset
        self.test_index = test_index if test_index.is_file() else None
        self.wait_s = wait_s
        self._ppm: Memo[bytes, int] = Memo(MAX_CACHED)  # by model hash
        self._one_job = trio.Lock()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Owns the measurements under way until the node stops."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def measuring(self, model_hash: bytes) -> bool:
        return self._ppm.computing(model_hash)

    async def of(self, model_hash: bytes, blob: bytes) -> float | None:
        return (await self.of_many([(model_hash, blob)]))[0]

    async def of_many(self, models: Sequence[tuple[bytes, bytes]]) -> list[float | None]:
        """Each model's accuracy, or None where it is not known within `wait_s` (it is
        then still being measured) or cannot be (no test split, the job failed)."""
        missing = [(h, blob) for h, blob in models if self._ppm.peek(h) is None]
        if self.test_index is not None and missing:
            if self._nursery is None:
                raise RuntimeError("AccuracyBoard.run must be started before it is read")
            left = len(missing)
            all_done = trio.Event()

            async def measure(h: bytes, blob: bytes) -> None:
                nonlocal left
                try:
                    await self._measure(h, blob)
                finally:
                    left -= 1
                    if left == 0:
                        all_done.set()

            for h, blob in missing:
                self._nursery.start_soon(measure, h, blob)
            with trio.move_on_after(self.wait_s):
                await all_done.wait()
        return [self._known(h) for h, _ in models]

    def _known(self, model_hash: bytes) -> float | None:
        ppm = self._ppm.peek(model_hash)
        return None if ppm is None else ppm / 1_000_000

    async def _measure(self, model_hash: bytes, blob: bytes) -> None:
        assert self.test_index is not None
        job = TestAccuracy(self.arch, self.dataset, str(self.test_index), blob)

        async def one_job() -> int:
            async with self._one_job:
                return await self.pool.run(job, timeout=JOB_TIMEOUT_S)

        try:
            await self._ppm.get(model_hash, one_job)
        except WorkerError as exc:
            log.info("no test accuracy for model %s: %s", short(model_hash, 12), exc)
        except Exception:  # reporting only: a bug here must never end the node
            log.exception("measuring model %s failed unexpectedly", short(model_hash, 12))
