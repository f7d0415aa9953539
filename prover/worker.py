"""Worker processes for CPU-heavy jobs (training, proving, verifying), owned by the node.

Jobs run in *spawned* OS processes (a fork()ed child deadlocked in ezkl's
`prove`, DESIGN.md §4) and talk to the node over a pipe. A request is a typed
`prover.client.Job`; the child calls its `execute` and sends back the result.
Both cross the pipe pickled: the pipe joins the node to its own child, so both
ends are trusted. Each call has a timeout; on timeout or cancellation the worker
is killed (ezkl cannot be interrupted in-process) and replaced before the next
job, with a log line; a worker that dies mid-job reports that job failed instead
of hanging the caller.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import pickle
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import trio

from prover.client import Job

log = logging.getLogger("zkpot.worker")

R = TypeVar("R")


class WorkerError(Exception):
    """A job did not produce a result; the message says why."""


class JobFailed(WorkerError):
    """The job raised inside the worker (bad input, ezkl error)."""


class JobTimeout(WorkerError):
    """The job overran its deadline; its worker was killed and will be replaced."""


class WorkerCrashed(WorkerError):
    """The worker process died while running the job."""


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _serve(conn: Connection) -> None:
    """Child main loop: one job at a time until the pipe closes.

    A request is ``(id, job class name, pickled job)``: the job is unpickled on its
    own, so a job this process cannot load fails that job, not the worker.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job_id, name, payload = pickle.loads(raw)
        try:
            job = pickle.loads(payload)
            reply = pickle.dumps((job_id, "ok", job.execute()), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            reply = pickle.dumps((job_id, "err", f"{name}: {_describe(exc)}"))
        conn.send_bytes(reply)


class Worker:
    """One spawned process; at most one job at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_serve, args=(child,), name=self.name, daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def _ensure(self) -> None:
        if self._alive():
            return
        if self._proc is not None:
            log.warning(
                "worker %s (pid %s) died with exit code %s; restarting it",
                self.name,
                self._proc.pid,
                self._proc.exitcode,
            )
            self.kill()
            self.restarts += 1
        self._start()

    async def call(self, job: Job[R], *, timeout: float) -> R:
        name = type(job).__name__
        payload = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)  # an unpicklable job fails here
        async with self._lock:
            self._ensure()
            conn = self._conn
            assert conn is not None
            job_id = next(self._ids)
            conn.send_bytes(pickle.dumps((job_id, name, payload), pickle.HIGHEST_PROTOCOL))
            done = False
            try:
                with trio.move_on_after(timeout) as scope:
                    raw = await trio.to_thread.run_sync(conn.recv_bytes, abandon_on_cancel=True)  # type: ignore[call-arg]  # trio-typing stubs lag trio
                    done = True
                if scope.cancelled_caught:
                    log.warning(
                        "worker %s: job %s timed out after %ss; killing it",
                        self.name,
                        name,
                        timeout,
                    )
                    raise JobTimeout(f"{name} timed out after {timeout} s")
            except (EOFError, OSError):
                code = self._proc.exitcode if self._proc is not None else None
                self._proc.join(timeout=5) if self._proc is not None else None
                code = self._proc.exitcode if self._proc is not None else code
                log.warning("worker %s crashed during %s (exit code %s)", self.name, name, code)
                raise WorkerCrashed(f"worker died during {name} (exit code {code})") from None
            finally:
                if not done:
                    self.kill()  # a reply may still come: never reuse this pipe
                    self.restarts += 1
            try:
                reply_id, status, result = pickle.loads(raw)
            except Exception as exc:
                raise WorkerError(f"{name}: unreadable reply: {_describe(exc)}") from None
            if reply_id != job_id:
                self.kill()
                raise WorkerError(f"worker {self.name} answered job {reply_id}, expected {job_id}")
            if status != "ok":
                raise JobFailed(str(result))
            answer: R = result
            return answer


class WorkerPool:
    """A fixed set of workers; `run` waits for a free one (a node verifies a round's proofs in parallel)."""

    def __init__(self, size: int, name: str = "prover") -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._workers = [Worker(f"{name}-{i}") for i in range(size)]
        self._free: list[Worker] = list(self._workers)
        self._available = trio.Semaphore(size)

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    async def run(self, job: Job[R], *, timeout: float) -> R:
        async with self._available:
            worker = self._free.pop()
            try:
                return await worker.call(job, timeout=timeout)
            finally:
                self._free.append(worker)

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
async def worker_pool(size: int, name: str = "prover") -> AsyncIterator[WorkerPool]:
    """A pool whose processes end with the block that owns it, however it exits."""
    pool = WorkerPool(size, name)
    try:
        yield pool
    finally:
        pool.close()
