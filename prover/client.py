"""Typed prover jobs: what the node asks a worker process to do, and what comes back.

The node's event loop imports this module, so it stays light: a job's `execute`
runs inside the worker process (`prover.worker`) and only there imports torch
and ezkl (through `prover.jobs`). Jobs and results cross the pipe pickled, so
they hold plain values (bytes, ints, strs) and a job can be replayed from them.
(Over 300 lines on purpose: one small dataclass per job, so the list of what a worker
can be asked is in one place.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

from consensus.optimizer import Momentum
from consensus.secagg import MaskedUpdate

R = TypeVar("R", covariant=True)


@dataclass(frozen=True)
class Job(ABC, Generic[R]):
    """One unit of work with a typed result; `WorkerPool.run(job)` returns what `execute` does."""

    @abstractmethod
    def execute(self) -> R:
        """Runs in the worker process: import heavy modules here, never at module level."""


@dataclass(frozen=True)
class Proved:
    """A proof that the committed model classifies `k` of the batch correctly."""

    k: int
    proof: bytes


@dataclass(frozen=True)
class Verified:
    """A verifier's verdict; `reason` says why when `ok` is false."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class Built:
    """A freshly built circuit: its manifest's fields and the initial model it was set up with."""

    manifest: dict[str, str | int]
    initial_model: bytes
    prove_ms: int  # the self-test proof, on the machine that built the circuit
    verify_ms: int


@dataclass(frozen=True)
class Train(Job[bytes]):
    """Local training on this participant's own data file (prover.trainfile); returns
    the weights."""

    arch: str
    global_weights: bytes
    data_file: str
    epochs: int
    batch_size: int
    learning_rate_ppm: int
    seed: int

    def execute(self) -> bytes:
        from prover import jobs

        return jobs.train(
            self.arch,
            self.global_weights,
            self.data_file,
            self.epochs,
            self.batch_size,
            self.learning_rate_ppm,
            self.seed,
        )


@dataclass(frozen=True)
class Commit(Job[bytes]):
    """The commitment C that binds a model's weights to its proofs."""

    artifacts: str
    arch: str
    weights: bytes

    def execute(self) -> bytes:
        from prover import jobs

        return jobs.commit(self.artifacts, self.arch, self.weights)


@dataclass(frozen=True)
class Prove(Job[Proved]):
    """Prove the model's accuracy on an encoded `EvalBatch`."""

    artifacts: str
    arch: str
    weights: bytes
    batch: bytes

    def execute(self) -> Proved:
        from prover import jobs

        return jobs.prove(self.artifacts, self.arch, self.weights, self.batch)


@dataclass(frozen=True)
class Verify(Job[Verified]):
    """Check a proof that the model committed as `commitment` gets `k` of `batch` right."""

    artifacts: str
    proof: bytes
    batch: bytes
    commitment: bytes
    k: int

    def execute(self) -> Verified:
        from prover import jobs

        return jobs.verify(self.artifacts, self.proof, self.batch, self.commitment, self.k)


@dataclass(frozen=True)
class Evaluate(Job[int]):
    """The plain quantised re-evaluation that re-checks a proposer's claimed k."""

    artifacts: str
    arch: str
    weights: bytes
    batch: bytes

    def execute(self) -> int:
        from prover import jobs

        return jobs.evaluate(self.artifacts, self.arch, self.weights, self.batch)


@dataclass(frozen=True)
class MaskVector(Job[MaskedUpdate]):
    """A member's masked vector for a selection, as an unsigned MaskedUpdate (y, the
    pairwise- and self-mask commitments, the shares of its self seed); `others` are the
    other members' (key, mask public key) in member order."""

    artifacts: str
    arch: str
    weights: bytes
    weight: int
    secret: int
    me: bytes
    others: tuple[tuple[bytes, bytes], ...]
    context: bytes
    threshold: int

    def execute(self) -> MaskedUpdate:
        from prover import aggregation

        return aggregation.mask_update(
            self.artifacts,
            self.arch,
            self.weights,
            self.weight,
            self.secret,
            self.me,
            self.others,
            self.context,
            self.threshold,
        )


@dataclass(frozen=True)
class CheckUpdate(Job[bool]):
    """Whether a member's masked vector is its committed model plus the masks it committed."""

    artifacts: str
    arch: str
    commitment: bytes
    weight: int
    update: bytes  # an encoded MaskedUpdate
    signs: tuple[int, ...]
    parts: tuple[bytes, ...] = ()  # v7: the data of its later vector parts, in order

    def execute(self) -> bool:
        from prover import aggregation

        return aggregation.check_update(
            self.artifacts,
            self.arch,
            self.commitment,
            self.weight,
            MaskedUpdate.decode(self.update),
            self.signs,
            self.parts,
        )


@dataclass(frozen=True)
class MaskCommitment(Job[bytes]):
    """L(expand(seed)), compressed: settles a pair dispute from the pair's true seed."""

    artifacts: str
    arch: str
    seed: bytes

    def execute(self) -> bytes:
        from prover import aggregation

        return aggregation.mask_commitment(self.artifacts, self.arch, self.seed)


@dataclass(frozen=True)
class Aggregate(Job[tuple[bytes, bytes]]):
    """(M's blob, R) from a completed selection's vectors and self-mask seeds."""

    artifacts: str
    arch: str
    members: tuple[bytes, ...]
    vectors: tuple[bytes, ...]
    seeds: tuple[bytes, ...]
    self_commitments: tuple[bytes, ...]
    weight_sum: int

    def execute(self) -> tuple[bytes, bytes]:
        from prover import aggregation

        return aggregation.aggregate(
            self.artifacts,
            self.arch,
            self.members,
            self.vectors,
            self.seeds,
            self.self_commitments,
            self.weight_sum,
        )


@dataclass(frozen=True)
class CommitAggregate(Job[bytes]):
    """C(S*M + R), compressed, for the aggregate check of a block."""

    artifacts: str
    arch: str
    weights: bytes
    remainder: bytes
    weight_sum: int

    def execute(self) -> bytes:
        from prover import aggregation

        return aggregation.commit_aggregate(
            self.artifacts, self.arch, self.weights, self.remainder, self.weight_sum
        )


@dataclass(frozen=True)
class StepModel(Job[tuple[bytes, bytes]]):
    """The blobs of G' and V': the server optimizer's step with an aggregate (v6)."""

    artifacts: str
    arch: str
    parent: bytes  # the parent's model blob
    velocity: bytes  # the parent's velocity blob (empty: zero)
    mean: bytes  # the aggregate's blob
    momentum: Momentum

    def execute(self) -> tuple[bytes, bytes]:
        from prover import aggregation

        return aggregation.step_blobs(
            self.artifacts, self.arch, self.parent, self.velocity, self.mean, self.momentum
        )


@dataclass(frozen=True)
class CheckStep(Job[bool]):
    """Whether a block's G' and V' blobs are the server optimizer's step (v6)."""

    artifacts: str
    arch: str
    parent: bytes
    velocity: bytes
    mean: bytes
    momentum: Momentum
    model: bytes
    new_velocity: bytes

    def execute(self) -> bool:
        from prover import aggregation

        return aggregation.check_step(
            self.artifacts,
            self.arch,
            self.parent,
            self.velocity,
            self.mean,
            self.momentum,
            self.model,
            self.new_velocity,
        )


@dataclass(frozen=True)
class DeriveAggregation(Job[bytes]):
    """The encoded AggregationSpec of a circuit (testnet init pins it; nodes re-derive it)."""

    artifacts: str
    arch: str
    unusable_rows: int

    def execute(self) -> bytes:
        from prover import aggregation

        return aggregation.spec(self.artifacts, self.arch, self.unusable_rows).encode()


@dataclass(frozen=True)
class BuildCircuit(Job[Built]):
    """Build the chain's circuit artifacts into `out` (`srs` None: a test-only SRS)."""

    arch: str
    batch_size: int
    out: str
    seed: int
    logrows: int
    srs: str | None
    grow: bool = False  # logrows is a floor (prover.circuit.fold_logrows): testnet init

    def execute(self) -> Built:
        from prover import jobs

        return jobs.build_circuit(
            self.arch, self.batch_size, self.out, self.seed, self.logrows, self.srs, self.grow
        )


@dataclass(frozen=True)
class RegeneratePk(Job[None]):
    """Rebuild the proving key from the pinned circuit and SRS (pk files are never shipped)."""

    artifacts: str

    def execute(self) -> None:
        from prover import jobs

        jobs.regenerate_pk(self.artifacts)


@dataclass(frozen=True)
class TestAccuracy(Job[int]):
    """A global model's accuracy on the public test split, in ppm (reporting only: the
    explorer's learning curve; consensus never reads it)."""

    arch: str
    dataset: str
    test_index: str  # the home's test_index.bin: int64 LE row indices
    weights: bytes

    def execute(self) -> int:
        from prover import jobs

        return jobs.test_accuracy_ppm(self.arch, self.dataset, self.test_index, self.weights)


@dataclass(frozen=True)
class Warmup(Job[None]):
    """Run first in every new worker: imports torch and ezkl (and loads the training data,
    if named), so no real job pays for them inside a round's window."""

    arch: str = "digits-mlp-tiny"

    data_file: str | None = None

    def execute(self) -> None:
        from prover import jobs

        jobs.warm(self.arch, self.data_file)
