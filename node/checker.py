"""Answers consensus's expensive checks (consensus.checks) in the worker pool.

zk verifications (by their public values) and model checks (by value) are answered
once (node.memo): a proof is seen by gossip, then again in its block, and sync runs a
batch's checks ahead of importing it; a check asked for while the same one runs waits
for it. Model checks run in parallel with the verifications. A worker that
fails or overruns is not a verdict: `CheckIncomplete` says the check could not be
done here and now (busy machine, killed worker), so callers neither refuse the
block or proof nor blame whoever sent it, and a later copy or the sync loop tries
again. Timing is not correctness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from consensus.checks import (
    Answer,
    Check,
    CommitModel,
    EvaluateModel,
    MaskOf,
    ModelCheck,
    ServerStep,
    UpdateHolds,
    VerifyProof,
)
from consensus.crypto import sha256, short
from consensus.errors import InvalidError
from consensus.optimizer import Momentum
from node.interfaces import Prover
from node.memo import Memo
from prover.client import (
    CheckStep,
    CheckUpdate,
    Commit,
    Evaluate,
    Job,
    MaskCommitment,
    Verified,
    Verify,
)
from prover.client import CommitAggregate as CommitAggregateJob
from prover.worker import JobFailed, WorkerError

MAX_VERIFIED = 100_000  # zk verifications remembered
MAX_ANSWERS = 1024  # model checks remembered (sync answers a batch's ahead of importing it)


class CheckIncomplete(WorkerError):
    """A check could not be completed here (worker failure or timeout): no verdict."""


class Checker:
    def __init__(self, pool: Prover, artifacts: Path, arch: str, timeout_s: float) -> None:
        self.pool = pool
        self.artifacts = str(artifacts)
        self.arch = arch
        self.timeout_s = timeout_s
        self._verified: Memo[bytes, Verified] = Memo(MAX_VERIFIED)  # by public values
        self._answers: Memo[Check, Answer] = Memo(MAX_ANSWERS)  # model checks, by value
        self._updates: Memo[bytes, Answer] = Memo(256)  # evidence's update checks, by digest

    @staticmethod
    def _key(c: VerifyProof) -> bytes:
        return sha256(
            sha256(c.proof) + c.batch.hash() + sha256(c.commitment) + c.k.to_bytes(4, "big")
        )

    async def verify(self, check: VerifyProof) -> tuple[bool, str]:
        job = Verify(self.artifacts, check.proof, check.batch.encode(), check.commitment, check.k)
        try:
            v = await self._verified.get(
                self._key(check), lambda: self.pool.run(job, timeout=self.timeout_s)
            )
        except JobFailed as exc:  # the verifier raised on these inputs: they are bad
            return False, f"verification failed: {exc}"
        except WorkerError as exc:
            raise CheckIncomplete(f"verification did not complete: {exc}") from exc
        return v.ok, v.reason

    def _job(self, check: Check, blobs: Mapping[bytes, bytes]) -> Job[Any]:
        """The worker job that answers a model or evidence check."""
        if isinstance(check, UpdateHolds):
            return CheckUpdate(
                self.artifacts,
                self.arch,
                check.commitment,
                check.weight,
                check.update,
                check.signs,
                check.parts,
            )
        if isinstance(check, MaskOf):
            return MaskCommitment(self.artifacts, self.arch, check.seed)
        if isinstance(check, ServerStep):
            return CheckStep(
                self.artifacts,
                self.arch,
                blobs[check.parent_model],
                blobs[check.parent_velocity] if check.parent_velocity else b"",
                blobs[check.aggregate],
                Momentum(check.beta_num, check.beta_den, check.scale),
                blobs[check.model],
                blobs[check.velocity],
            )
        if isinstance(check, VerifyProof):
            raise TypeError(f"not a model check: {check!r}")
        model = blobs[check.model_hash]
        if isinstance(check, CommitModel):
            return Commit(self.artifacts, self.arch, model)
        if isinstance(check, EvaluateModel):
            return Evaluate(self.artifacts, self.arch, model, check.batch.encode())
        return CommitAggregateJob(
            self.artifacts, self.arch, model, check.remainder, check.weight_sum
        )

    async def _run(self, job: Job[Any]) -> Answer:
        answer: Answer = await self.pool.run(job, timeout=self.timeout_s)
        return answer

    async def answer(
        self, checks: Sequence[Check], blobs: Mapping[bytes, bytes]
    ) -> dict[Check, Answer]:
        """Every check answered, in parallel; `blobs` holds the blobs the checks name, by
        hash (the block's model, aggregate and velocity, its parent's model and velocity)."""
        at_hand = {h for h, blob in blobs.items() if sha256(blob) == h}  # each hashed once
        for c in checks:
            named: tuple[bytes, ...] = (c.model_hash,) if isinstance(c, ModelCheck) else ()
            for h in c.blobs() if isinstance(c, ServerStep) else named:
                if h not in at_hand:
                    raise InvalidError(f"Block: blob {short(h, 12)} is not at hand")
        answers: dict[Check, Answer] = {}
        failures: list[str] = []  # the inputs made the job fail: a verdict
        incomplete: list[str] = []  # no verdict (timeout, crash)

        async def one(check: Check) -> None:
            # Each task reports its own failure: an exception group out of the nursery
            # would escape every `except` the callers have.
            try:
                if isinstance(check, VerifyProof):
                    answers[check] = (await self.verify(check))[0]
                    return
                job = self._job(check, blobs)
                if isinstance(check, UpdateHolds):  # keyed by digest: the check holds a vector
                    key = sha256(
                        check.update
                        + b"".join(check.parts)
                        + check.commitment
                        + repr((check.weight, check.signs)).encode()
                    )
                    answers[check] = await self._updates.get(key, lambda: self._run(job))
                    return
                # a model check is a function of its values: answered once
                answers[check] = await self._answers.get(check, lambda: self._run(job))
            except JobFailed as exc:
                failures.append(f"{type(check).__name__}: {exc}")
            except WorkerError as exc:
                incomplete.append(f"{type(check).__name__}: {exc}")

        async with trio.open_nursery() as nursery:
            for c in checks:
                nursery.start_soon(one, c)
        if failures:
            raise InvalidError(f"Block: the revealed model fails its checks: {'; '.join(failures)}")
        if incomplete:
            raise CheckIncomplete(f"the block cannot be checked now: {'; '.join(incomplete)}")
        return answers
