"""Worker processes for CPU-heavy jobs (training, proving, verifying), owned by the node.

Jobs run in *spawned* OS processes (a fork()ed child deadlocked in ezkl's
`prove`, DESIGN.md §4) and talk to the node over a pipe with a small typed
protocol: a request is the msgpack array ``[id, job, args]``, a reply is
``[id, "ok", result]`` or ``[id, "err", message]``. Each call has a timeout;
on timeout or cancellation the worker is killed (ezkl cannot be interrupted
in-process) and replaced before the next job, with a log line; a worker that
dies mid-job reports that job failed instead of hanging the caller.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import multiprocessing as mp
import os
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from multiprocessing.connection import Connection
from typing import Any

import msgpack
import trio

log = logging.getLogger("zkpot.worker")

DEFAULT_TARGET = "prover.jobs:JOBS"


class WorkerError(Exception):
    """A job did not produce a result; the message says why."""


class JobFailed(WorkerError):
    """The job raised inside the worker (bad input, ezkl error)."""


class JobTimeout(WorkerError):
    """The job overran its deadline; its worker was killed and will be replaced."""


class WorkerCrashed(WorkerError):
    """The worker process died while running the job."""


def _load_jobs(target: str) -> dict[str, Callable[..., Any]]:
    module, _, attr = target.partition(":")
    jobs: dict[str, Callable[..., Any]] = getattr(importlib.import_module(module), attr)
    return jobs


def _serve(conn: Connection, target: str) -> None:
    """Child main loop: one job at a time until the pipe closes."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = _load_jobs(target)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job_id, name, args = msgpack.unpackb(raw, raw=False)
        try:
            fn = jobs[name]
            reply = [job_id, "ok", fn(*args)]
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            reply = [job_id, "err", f"{name}: {detail}"]
        conn.send_bytes(msgpack.packb(reply, use_bin_type=True))


class Worker:
    """One spawned process; at most one job at a time."""

    def __init__(self, name: str, target: str = DEFAULT_TARGET) -> None:
        self.name = name
        self.target = target
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
        proc = ctx.Process(target=_serve, args=(child, self.target), name=self.name, daemon=True)
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

    async def call(self, job: str, *args: Any, timeout: float) -> Any:
        async with self._lock:
            self._ensure()
            conn = self._conn
            assert conn is not None
            job_id = next(self._ids)
            conn.send_bytes(msgpack.packb([job_id, job, list(args)], use_bin_type=True))
            done = False
            try:
                with trio.move_on_after(timeout) as scope:
                    raw = await trio.to_thread.run_sync(conn.recv_bytes, abandon_on_cancel=True)  # type: ignore[call-arg]  # trio-typing stubs lag trio
                    done = True
                if scope.cancelled_caught:
                    log.warning(
                        "worker %s: job %s timed out after %ss; killing it", self.name, job, timeout
                    )
                    raise JobTimeout(f"{job} timed out after {timeout} s")
            except (EOFError, OSError):
                code = self._proc.exitcode if self._proc is not None else None
                self._proc.join(timeout=5) if self._proc is not None else None
                code = self._proc.exitcode if self._proc is not None else code
                log.warning("worker %s crashed during %s (exit code %s)", self.name, job, code)
                raise WorkerCrashed(f"worker died during {job} (exit code {code})") from None
            finally:
                if not done:
                    self.kill()  # a reply may still come: never reuse this pipe
                    self.restarts += 1
            reply_id, status, result = msgpack.unpackb(raw, raw=False)
            if reply_id != job_id:
                self.kill()
                raise WorkerError(f"worker {self.name} answered job {reply_id}, expected {job_id}")
            if status != "ok":
                raise JobFailed(str(result))
            return result


class WorkerPool:
    """A fixed set of workers; `run` waits for a free one (a node verifies a round's proofs in parallel)."""

    def __init__(self, size: int, target: str = DEFAULT_TARGET, name: str = "prover") -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self._workers = [Worker(f"{name}-{i}", target) for i in range(size)]
        self._free: list[Worker] = list(self._workers)
        self._available = trio.Semaphore(size)

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    async def run(self, job: str, *args: Any, timeout: float) -> Any:
        async with self._available:
            worker = self._free.pop()
            try:
                return await worker.call(job, *args, timeout=timeout)
            finally:
                self._free.append(worker)

    def close(self) -> None:
        for w in self._workers:
            w.kill()


def run_once(job: str, *args: Any, timeout: float, name: str = "oneshot") -> Any:
    """Run one job in a fresh worker process from synchronous code (CLI commands)."""

    async def go() -> Any:
        async with worker_pool(1, name=name) as pool:
            return await pool.run(job, *args, timeout=timeout)

    return trio.run(go)


@asynccontextmanager
async def worker_pool(
    size: int, target: str = DEFAULT_TARGET, name: str = "prover"
) -> AsyncIterator[WorkerPool]:
    """A pool whose processes end with the block that owns it, however it exits."""
    pool = WorkerPool(size, target, name)
    try:
        yield pool
    finally:
        pool.close()
