"""Worker processes for CPU-heavy jobs (training, proving, verifying), owned by the node.

(Over 300 lines on purpose: a worker's whole life, spawn, warm-up, jobs, kill, reap and
replacement, is one state machine best read in one place.)

Jobs run in *spawned* OS processes (a fork()ed child deadlocked in ezkl's
`prove`, DESIGN.md §4) and talk to the node over a pipe. A request is a typed
`prover.client.Job`; the child calls its `execute` and sends back the result.
Both cross the pipe pickled: the pipe joins the node to its own child, so both
ends are trusted. Each call has a timeout; on timeout or cancellation the worker
is killed (ezkl cannot be interrupted in-process), with a log line, and a pool
replaces it at once in the background, warm (its `warmup` job run: imports done).
A caller that gives up (a round's deadline passed) does not kill anything: in a
pool the job finishes in the background and the warm worker serves the next job,
so a missed deadline never turns into a cold start inside the next round's window. A worker that dies mid-job reports that job failed instead of hanging the
caller. No process is ever joined on the event loop: reaping runs in a thread.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import pickle
import time
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import trio

from prover.client import Job
from prover.faults import Faults

log = logging.getLogger("zkpot.worker")

R = TypeVar("R")

GRACE_S = 10.0  # how long a job whose caller gave up may still run
WARMUP_TIMEOUT_S = 600


class WorkerError(Exception):
    """A job did not produce a result; the message says why."""


class JobFailed(WorkerError):
    """The job raised inside the worker (bad input, ezkl error)."""


class JobTimeout(WorkerError):
    """The job overran its deadline; its worker was killed and will be replaced."""


class JobDropped(WorkerError):
    """Its caller gave up before the job started: it never ran."""


class WorkerCrashed(WorkerError):
    """The worker process died while running the job."""


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _serve(conn: Connection) -> None:
    """Child main loop: one job at a time until the pipe closes.

    A request is ``(id, job class name, pickled job, stall seconds)``: the job is
    unpickled on its own, so a job this process cannot load fails that job, not the
    worker; the stall is prover.faults' test hook (0 unless a test asks).
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # ezkl's Rust log reaches Python's logging (pyo3-log) and warns "low scale values (<8)
    # may impact precision" at every proof: the circuit's scale 7 is chosen on purpose
    # (prover.quant: exact integer arithmetic, no rescaling), so only its errors are said
    logging.getLogger("ezkl").setLevel(logging.ERROR)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job_id, name, payload, stall_s = pickle.loads(raw)
        if stall_s:
            time.sleep(stall_s)
        try:
            job = pickle.loads(payload)
            reply = pickle.dumps((job_id, "ok", job.execute()), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            reply = pickle.dumps((job_id, "err", f"{name}: {_describe(exc)}"))
        conn.send_bytes(reply)


@dataclass(frozen=True)
class _Failed:
    exc: Exception


class Worker:
    """One spawned process; at most one job at a time.

    `warmup` runs first in every new process, before any real job, so the first
    real job finds torch and ezkl imported.
    """

    def __init__(self, name: str, warmup: Job[Any] | None = None) -> None:
        self.name = name
        self.warmup = warmup
        self._proc: Any = None
        self._conn: Connection | None = None
        self._dead: list[Any] = []  # killed processes still to reap, off the event loop
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        self.restarts = 0
        self.running: Job[Any] | None = None  # the job in the process now (not warm-up)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _spawn(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_serve, args=(child,), name=self.name, daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    def _abandon(self, why: str, *, quiet: bool = False) -> None:
        """Kill the process now (a signal: never blocks); it is reaped later in a thread."""
        if self._proc is not None:
            if not quiet:
                log.warning("worker %s (pid %s): %s; killed it", self.name, self._proc.pid, why)
            if self._proc.is_alive():
                self._proc.kill()
            self._dead.append(self._proc)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    async def _reap(self) -> None:
        while self._dead:
            proc = self._dead.pop()
            await trio.to_thread.run_sync(proc.join, 5)

    async def _ensure(self) -> None:
        """A live, warm process (the caller holds the lock)."""
        await self._reap()
        if self.alive():
            return
        if self._proc is not None:
            log.warning(
                "worker %s (pid %s) died with exit code %s; restarting it",
                self.name,
                self._proc.pid,
                self._proc.exitcode,
            )
            self._abandon("dead", quiet=True)
            self.restarts += 1
            await self._reap()
        t0 = time.monotonic()
        self._spawn()
        if self.warmup is not None:
            try:
                await self._exchange(self.warmup, timeout=WARMUP_TIMEOUT_S)
            except JobFailed as exc:  # a cold worker still works: its first job pays
                log.warning("worker %s: warm-up failed: %s", self.name, exc)
                return
            log.info(
                "worker %s (pid %s) warm in %.1f s", self.name, self.pid, time.monotonic() - t0
            )

    async def start(self) -> None:
        """Start (or replace) the process and warm it; a no-op while it is alive."""
        async with self._lock:
            await self._ensure()

    async def call(
        self,
        job: Job[R],
        *,
        timeout: float,
        stall_s: float = 0.0,
        wanted: Callable[[], bool] = lambda: True,
    ) -> R:
        """Run `job`; if nobody `wanted` it any more once the worker is free, drop it unrun."""
        async with self._lock:
            await self._ensure()
            if not wanted():
                raise JobDropped(f"{type(job).__name__} was dropped: its caller gave up first")
            self.running = job
            try:
                return await self._exchange(job, timeout=timeout, stall_s=stall_s)
            finally:
                self.running = None

    async def _exchange(self, job: Job[R], *, timeout: float, stall_s: float = 0.0) -> R:
        name = type(job).__name__
        payload = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)  # an unpicklable job fails here
        conn = self._conn
        assert conn is not None
        job_id = next(self._ids)
        conn.send_bytes(pickle.dumps((job_id, name, payload, stall_s), pickle.HIGHEST_PROTOCOL))
        why = f"job {name} was cancelled"
        done = False
        try:
            with trio.move_on_after(timeout) as scope:
                raw = await trio.to_thread.run_sync(conn.recv_bytes, abandon_on_cancel=True)  # type: ignore[call-arg]  # trio-typing stubs lag trio
                done = True
            if scope.cancelled_caught:
                why = f"job {name} timed out after {timeout} s"
                raise JobTimeout(f"{name} timed out after {timeout} s")
        except (EOFError, OSError):
            if self._proc is None:  # killed on purpose meanwhile (a job past its grace)
                raise JobTimeout(
                    f"{name} was killed: it ran too long after its caller gave up"
                ) from None
            why = f"it died during {name}"
            proc = self._proc
            if proc is not None:
                await trio.to_thread.run_sync(proc.join, 5)
            code = proc.exitcode if proc is not None else None
            log.warning("worker %s crashed during %s (exit code %s)", self.name, name, code)
            raise WorkerCrashed(f"worker died during {name} (exit code {code})") from None
        finally:
            if not done:  # a reply may still come: never reuse this pipe
                self._abandon(why)
                self.restarts += 1
        try:
            reply_id, status, result = pickle.loads(raw)
        except Exception as exc:
            raise WorkerError(f"{name}: unreadable reply: {_describe(exc)}") from None
        if reply_id != job_id:
            self._abandon(f"answered job {reply_id}, expected {job_id}")
            raise WorkerError(f"worker {self.name} answered job {reply_id}, expected {job_id}")
        if status != "ok":
            raise JobFailed(str(result))
        answer: R = result
        return answer

    def kill(self) -> None:
        """Kill and reap synchronously: for shutdown and tests, not for the event loop."""
        self._abandon("shutting down", quiet=True)
        for proc in self._dead:
            proc.join(timeout=5)
        self._dead.clear()


class WorkerPool:
    """A fixed set of workers; `run` takes a free one (a node verifies a round's proofs in parallel).

    With a nursery, a worker killed by a job (timeout, cancellation, crash) is
    replaced and warmed at once in the background, and every worker is started
    warm when the pool opens; without one, a worker is (re)started by its next job.
    """

    def __init__(
        self,
        size: int,
        name: str = "prover",
        *,
        nursery: trio.Nursery | None = None,
        warmup: Job[Any] | None = None,
        grace_s: float = GRACE_S,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._workers = [Worker(f"{name}-{i}", warmup) for i in range(size)]
        self._nursery = nursery
        self._free_send, self._free = trio.open_memory_channel[Worker](size)
        self._grace_s = grace_s
        self._faults = Faults.from_env()
        for w in self._workers:
            self._free_send.send_nowait(w)
            if nursery is not None:
                nursery.start_soon(self._keep, w)

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    async def _keep(self, worker: Worker) -> None:
        try:
            await worker.start()
        except WorkerError as exc:  # its next job retries, and says why if it fails again
            log.warning("worker %s could not be started: %s", worker.name, exc)

    async def run(self, job: Job[R], *, timeout: float) -> R:
        """The job's result. A caller that gives up (its deadline passed) does not kill the
        worker: the job finishes in the pool's nursery, bounded by `timeout`, and the warm
        worker serves the next job; killing it would cost a cold start, far more than the
        rest of a job. Only a job that overruns `timeout` (or a crash) costs a process.
        """
        worker = await self._free.receive()
        stall_s = self._faults.stall_for(type(job).__name__)
        if self._nursery is None:
            try:
                return await worker.call(job, timeout=timeout, stall_s=stall_s)
            finally:
                self._free_send.send_nowait(worker)
        done = trio.Event()
        gave_up = trio.Event()
        outcome: list[Any] = []

        async def exchange() -> None:
            try:
                outcome.append(
                    await worker.call(
                        job, timeout=timeout, stall_s=stall_s, wanted=lambda: not gave_up.is_set()
                    )
                )
            except Exception as exc:  # handed to the caller, if it still waits
                outcome.append(_Failed(exc))
            finally:
                done.set()
                self._release(worker)

        assert self._nursery is not None
        self._nursery.start_soon(exchange)
        try:
            await done.wait()
        except trio.Cancelled:
            gave_up.set()
            if not done.is_set():
                log.info(
                    "worker %s: the caller of %s gave up; the job may finish in the background "
                    "(for %s s) and the warm worker stays",
                    worker.name,
                    type(job).__name__,
                    self._grace_s,
                )
                self._nursery.start_soon(self._expire, worker, done, job)
            raise
        result = outcome[0]
        if isinstance(result, _Failed):
            raise result.exc
        answer: R = result
        return answer

    async def _expire(self, worker: Worker, done: trio.Event, job: Job[Any]) -> None:
        """A job nobody waits for may finish for a while (cheaper than a new process);
        past the grace period it is stuck or far too slow: kill it, a warm one replaces it.
        Only that job: a worker still warming up, or running another job, is left alone."""
        with trio.move_on_after(self._grace_s):
            await done.wait()
        if not done.is_set() and worker.running is job:
            name = type(job).__name__
            worker._abandon(f"job {name} still running {self._grace_s} s after its caller gave up")

    def _release(self, worker: Worker) -> None:
        self._free_send.send_nowait(worker)
        if not worker.alive() and self._nursery is not None:
            self._nursery.start_soon(self._keep, worker)

    def close(self) -> None:
        for w in self._workers:
            w.kill()


def run_once(job: Job[R], *, timeout: float, name: str = "oneshot") -> R:
    """Run one job in a fresh worker process from synchronous code (CLI commands)."""

    async def go() -> R:
        async with worker_pool(1, name=name) as pool:
            return await pool.run(job, timeout=timeout)

    return trio.run(go)


@asynccontextmanager
async def worker_pool(
    size: int, name: str = "prover", *, warmup: Job[Any] | None = None
) -> AsyncIterator[WorkerPool]:
    """A pool whose processes end with the block that owns it, however it exits.

    Its workers start (and restart) warm in the background, in a nursery this block owns.
    """
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(size, name, nursery=nursery, warmup=warmup)
        try:
            yield pool
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close)
