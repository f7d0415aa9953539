"""Answers consensus's expensive checks (consensus.checks) in the worker pool.

zk verifications are cached by their public values (a proof is seen by gossip,
then again in its block; sync verifies a batch's proofs ahead of importing it), and a
verification asked for while the same one runs waits for it instead of running
twice; model checks run in parallel with them. A worker that
fails or overruns is not a verdict: `CheckIncomplete` says the check could not be
done here and now (busy machine, killed worker), so callers neither refuse the
block or proof nor blame whoever sent it, and a later copy or the sync loop tries
again. Timing is not correctness.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from consensus.checks import (
    Answer,
    Check,
    CommitAggregate,
    CommitModel,
    EvaluateModel,
    VerifyProof,
)
from consensus.crypto import sha256
from consensus.errors import InvalidError
from node.interfaces import Prover
from prover.client import Commit, Evaluate, Verify
from prover.client import CommitAggregate as CommitAggregateJob
from prover.worker import JobFailed, WorkerError

MAX_ANSWERS = 1024  # model checks remembered (sync answers a batch's ahead of importing it)


class CheckIncomplete(WorkerError):
    """A check could not be completed here (worker failure or timeout): no verdict."""


class Checker:
    def __init__(self, pool: Prover, artifacts: Path, arch: str, timeout_s: float) -> None:
        self.pool = pool
        self.artifacts = str(artifacts)
        self.arch = arch
        self.timeout_s = timeout_s
        self._cache: dict[bytes, tuple[bool, str]] = {}
        self._running: dict[bytes, trio.Event] = {}
        self._answers: OrderedDict[Check, Answer] = OrderedDict()  # model checks, by value
        self._pending: dict[Check, trio.Event] = {}  # model checks running now

    @staticmethod
    def _key(c: VerifyProof) -> bytes:
        return sha256(
            sha256(c.proof) + c.batch.hash() + sha256(c.commitment) + c.k.to_bytes(4, "big")
        )

    async def verify(self, check: VerifyProof) -> tuple[bool, str]:
        key = self._key(check)
        while key in self._running:  # the same verification is running: its answer will do
            await self._running[key].wait()
        if key in self._cache:
            return self._cache[key]
        job = Verify(self.artifacts, check.proof, check.batch.encode(), check.commitment, check.k)
        self._running[key] = done = trio.Event()
        try:
            v = await self.pool.run(job, timeout=self.timeout_s)
        except JobFailed as exc:  # the verifier raised on these inputs: they are bad
            return False, f"verification failed: {exc}"
        except WorkerError as exc:
            raise CheckIncomplete(f"verification did not complete: {exc}") from exc
        finally:
            del self._running[key]
            done.set()
        self._cache[key] = (v.ok, v.reason)
        if len(self._cache) > 100_000:
            self._cache.clear()
        return v.ok, v.reason

    def _remember(self, check: Check, answer: Answer) -> None:
        self._answers[check] = answer
        while len(self._answers) > MAX_ANSWERS:
            self._answers.popitem(last=False)

    async def answer(
        self, checks: Sequence[Check], blobs: Mapping[bytes, bytes]
    ) -> dict[Check, Answer]:
        """Every check answered, in parallel; `blobs` holds the model blobs the checks
        name, by hash (the block's model, its parent's)."""
        at_hand = {h for h, blob in blobs.items() if sha256(blob) == h}  # each hashed once
        for c in checks:
            if not isinstance(c, VerifyProof) and c.model_hash not in at_hand:
                raise InvalidError(f"Block: model blob {c.model_hash.hex()[:12]} is not at hand")
        answers: dict[Check, Answer] = {}
        failures: list[str] = []  # the inputs made the job fail: a verdict
        incomplete: list[str] = []  # no verdict (timeout, crash)

        async def one(check: Check) -> None:
            # Each task reports its own failure: an exception group out of the nursery
            # would escape every `except` the callers have.
            running: trio.Event | None = None
            try:
                if isinstance(check, VerifyProof):
                    answers[check] = (await self.verify(check))[0]
                    return
                while check in self._pending:  # the same check is running: wait for it
                    await self._pending[check].wait()
                if check in self._answers:  # a model check is a function of its values
                    answers[check] = self._answers[check]
                    return
                self._pending[check] = running = trio.Event()
                model = blobs[check.model_hash]
                if isinstance(check, CommitModel):
                    job = Commit(self.artifacts, self.arch, model)
                    answers[check] = await self.pool.run(job, timeout=self.timeout_s)
                elif isinstance(check, EvaluateModel):
                    ev = Evaluate(self.artifacts, self.arch, model, check.batch.encode())
                    answers[check] = await self.pool.run(ev, timeout=self.timeout_s)
                elif isinstance(check, CommitAggregate):
                    agg = CommitAggregateJob(
                        self.artifacts, self.arch, model, check.remainder, check.weight_sum
                    )
                    answers[check] = await self.pool.run(agg, timeout=self.timeout_s)
                self._remember(check, answers[check])
            except JobFailed as exc:
                failures.append(f"{type(check).__name__}: {exc}")
            except WorkerError as exc:
                incomplete.append(f"{type(check).__name__}: {exc}")
            finally:
                if running is not None:
                    del self._pending[check]
                    running.set()

        async with trio.open_nursery() as nursery:
            for c in checks:
                nursery.start_soon(one, c)
        if failures:
            raise InvalidError(f"Block: the revealed model fails its checks: {'; '.join(failures)}")
        if incomplete:
            raise CheckIncomplete(f"the block cannot be checked now: {'; '.join(incomplete)}")
        return answers
