"""node.accuracy: a read never waits long for a test accuracy the worker pool has not
measured yet (the pool is the proofs' and can be busy for minutes); the measurement goes
on in the background and a later read finds it; reporting runs one job at a time. The
pool is a stand-in that holds each job until the test lets it go (virtual time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from consensus.crypto import sha256
from node.accuracy import AccuracyBoard
from node.api import create_app, serve_api
from prover.client import TestAccuracy as AccuracyJob  # (not collected as a test class)
from prover.worker import JobFailed
from support.apinode import Node


class HeldPool:
    """Answers an accuracy job with 1000 ppm per byte of the model, once released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.jobs: list[bytes] = []
        self.running = self.most_at_once = 0
        self.fail = False

    async def run(self, job: Any, *, timeout: float) -> int:
        assert isinstance(job, AccuracyJob)
        self.jobs.append(job.weights)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
            if self.fail:
                raise JobFailed("TestAccuracy: bad model")
            return 1000 * len(job.weights)
        finally:
            self.running -= 1


def _board(tmp_path: Path, pool: HeldPool) -> AccuracyBoard:
    index = tmp_path / "test_index.bin"
    index.write_bytes(bytes(8))
    return AccuracyBoard(pool, "mlp", "digits", index, wait_s=2.0)  # type: ignore[arg-type]


async def test_a_read_answers_within_its_bound_and_a_later_one_finds_the_accuracy(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    pool = HeldPool()
    board = _board(tmp_path, pool)
    await nursery.start(board.run)
    model = b"m" * 300
    t0 = trio.current_time()
    assert await board.of(sha256(model), model) is None
    assert trio.current_time() - t0 == 2.0 and board.measuring(sha256(model))
    pool.release.set()
    await trio.sleep(0.1)
    assert await board.of(sha256(model), model) == 0.3
    assert not board.measuring(sha256(model)) and pool.jobs == [model]  # measured once


async def test_many_models_wait_once_together_and_run_one_job_at_a_time(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    pool = HeldPool()
    pool.release.set()
    board = _board(tmp_path, pool)
    await nursery.start(board.run)
    models = [bytes([i]) * (i + 1) for i in range(5)]
    got = await board.of_many([(sha256(m), m) for m in models])
    assert got == [0.001 * (i + 1) for i in range(5)]
    assert pool.most_at_once == 1 and len(pool.jobs) == 5


async def test_a_failed_measurement_reports_no_accuracy_and_is_tried_again(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    pool = HeldPool()
    pool.fail = True
    pool.release.set()
    board = _board(tmp_path, pool)
    await nursery.start(board.run)
    assert await board.of(b"h" * 32, b"x") is None
    pool.fail = False
    assert await board.of(b"h" * 32, b"x") == 0.001 and len(pool.jobs) == 2


async def test_the_round_api_says_the_accuracy_is_pending_while_the_pool_is_busy(
    node: Node, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """What CI saw: `GET /rounds/N` waited behind the pool past the client's timeout."""
    pool = HeldPool()
    board = _board(tmp_path, pool)
    board.wait_s = 0.2
    await nursery.start(board.run)
    port = await nursery.start(serve_api, create_app(node.view, board=board), "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        first = (await client.get("/rounds/3")).json()
        assert first["accuracy"] is None and first["accuracy_pending"] is True
        pool.release.set()
        for _ in range(50):
            later = (await client.get("/rounds/3")).json()
            if later["accuracy"] is not None:
                break
            await trio.sleep(0.05)
    blob = node.models[3]
    assert later["accuracy_ppm"] == 1000 * len(blob) and "accuracy_pending" not in later
