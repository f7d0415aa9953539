"""Answers consensus's expensive checks (consensus.checks) in the worker pool.

zk verifications are cached by their public values (a proof is seen by gossip,
then again in its block); model checks run in parallel with them. A worker
failure is an answer too: for a proof it is "does not verify" (not cached: it may
be transient), for the block's model it refuses the block with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

from consensus.checks import Answer, Check, CommitModel, EvaluateModel, VerifyProof
from consensus.crypto import sha256
from consensus.errors import InvalidError
from node.interfaces import Prover
from prover.client import Commit, Evaluate, Verify
from prover.worker import WorkerError


class Checker:
    def __init__(self, pool: Prover, artifacts: Path, arch: str, timeout_s: float) -> None:
        self.pool = pool
        self.artifacts = str(artifacts)
        self.arch = arch
        self.timeout_s = timeout_s
        self._cache: dict[bytes, tuple[bool, str]] = {}

    @staticmethod
    def _key(c: VerifyProof) -> bytes:
        return sha256(
            sha256(c.proof) + c.batch.hash() + sha256(c.commitment) + c.k.to_bytes(4, "big")
        )

    async def verify(self, check: VerifyProof) -> tuple[bool, str]:
        key = self._key(check)
        if key in self._cache:
            return self._cache[key]
        job = Verify(self.artifacts, check.proof, check.batch.encode(), check.commitment, check.k)
        try:
            v = await self.pool.run(job, timeout=self.timeout_s)
        except WorkerError as exc:
            return False, f"verification did not complete: {exc}"
        self._cache[key] = (v.ok, v.reason)
        if len(self._cache) > 100_000:
            self._cache.clear()
        return v.ok, v.reason

    async def answer(self, checks: Sequence[Check], model: bytes) -> dict[Check, Answer]:
        """Every check answered, in parallel; `model` is the blob the model checks name."""
        model_hash = sha256(model)
        if any(not isinstance(c, VerifyProof) and c.model_hash != model_hash for c in checks):
            raise InvalidError("Block: the model blob does not match model_hash")
        answers: dict[Check, Answer] = {}
        failures: list[str] = []

        async def one(check: Check) -> None:
            # Each task reports its own failure: an exception group out of the nursery
            # would escape every `except` the callers have.
            try:
                if isinstance(check, VerifyProof):
                    answers[check] = (await self.verify(check))[0]
                    return
                if isinstance(check, CommitModel):
                    job = Commit(self.artifacts, self.arch, model)
                    answers[check] = await self.pool.run(job, timeout=self.timeout_s)
                elif isinstance(check, EvaluateModel):
                    ev = Evaluate(self.artifacts, self.arch, model, check.batch.encode())
                    answers[check] = await self.pool.run(ev, timeout=self.timeout_s)
            except WorkerError as exc:
                failures.append(f"{type(check).__name__}: {exc}")

        async with trio.open_nursery() as nursery:
            for c in checks:
                nursery.start_soon(one, c)
        if failures:
            raise InvalidError(
                f"Block: the revealed model cannot be checked: {'; '.join(failures)}"
            )
        return answers
