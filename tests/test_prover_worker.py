"""Worker processes: results, failures, timeouts, crashes and cancellation never hang the caller."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from prover.client import Train
from prover.faults import ENV, Faults
from prover.worker import JobFailed, JobTimeout, Worker, WorkerCrashed, WorkerPool, worker_pool
from support.worker_jobs import Crash, Echo, Fail, Sleep, Unloadable, Whoami

pytestmark = pytest.mark.slow  # worker processes: not in the fast tier


async def test_job_result_comes_back() -> None:
    async with worker_pool(1) as pool:
        assert await pool.run(Echo([1, b"two", "three"]), timeout=60) == [1, b"two", "three"]


async def test_job_exception_is_reported_with_its_message_and_worker_survives() -> None:
    async with worker_pool(1) as pool:
        await pool.run(Echo(0), timeout=60)
        pid = pool.workers[0].pid
        with pytest.raises(JobFailed, match=r"^Fail: ValueError: bad input here$"):
            await pool.run(Fail("bad input here"), timeout=60)
        assert await pool.run(Echo(5), timeout=60) == 5
        assert pool.workers[0].pid == pid and pool.workers[0].restarts == 0


async def test_a_job_the_worker_cannot_load_fails_alone() -> None:
    async with worker_pool(1) as pool:
        await pool.run(Echo(0), timeout=60)
        pid = pool.workers[0].pid
        with pytest.raises(JobFailed, match=r"^Unloadable: RuntimeError: not loadable here$"):
            await pool.run(Unloadable(), timeout=60)
        assert await pool.run(Echo(b"still here"), timeout=60) == b"still here"
        assert pool.workers[0].pid == pid


async def test_timeout_kills_the_worker_and_the_next_job_runs_on_a_new_one() -> None:
    async with worker_pool(1) as pool:
        await pool.run(Echo(0), timeout=60)
        first = pool.workers[0].pid
        with pytest.raises(JobTimeout, match=r"^Sleep timed out"):
            await pool.run(Sleep(600), timeout=1)
        assert await pool.run(Echo(7), timeout=60) == 7
        assert pool.workers[0].pid != first


async def test_crashed_worker_fails_its_job_and_is_restarted_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="zkpot.worker")
    async with worker_pool(1) as pool:
        with pytest.raises(WorkerCrashed, match=r"during Crash \(exit code 3\)"):
            await pool.run(Crash(3), timeout=60)
        assert await pool.run(Echo("alive"), timeout=60) == "alive"
    assert any("crashed" in r.message for r in caplog.records)


async def test_killed_worker_process_is_replaced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="zkpot.worker")
    w = Worker("victim")
    try:
        await w.call(Echo(1), timeout=60)
        w._proc.kill()
        w._proc.join()
        assert await w.call(Echo(2), timeout=60) == 2
        assert w.restarts == 1
        assert any("restarting" in r.message for r in caplog.records)
    finally:
        w.kill()


async def test_a_caller_that_gives_up_leaves_the_job_to_finish_on_the_warm_worker() -> None:
    """A missed deadline must not cost a cold start: the job ends in the background."""
    async with worker_pool(1) as pool:
        await pool.run(Echo(0), timeout=60)
        worker = pool.workers[0]
        pid = worker.pid
        with trio.move_on_after(0.5) as scope:
            await pool.run(Whoami(1.5), timeout=600)
        assert scope.cancelled_caught
        start = trio.current_time()
        assert await pool.run(Echo(3), timeout=60) == 3
        assert trio.current_time() - start > 0.5, "the next job waited for the first to end"
        assert worker.pid == pid and worker.restarts == 0


async def test_a_worker_outside_a_pool_is_killed_when_its_caller_gives_up() -> None:
    w = Worker("alone")
    try:
        await w.call(Echo(0), timeout=60)
        proc = w._proc
        with trio.move_on_after(1):
            await w.call(Sleep(600), timeout=600)
        await trio.to_thread.run_sync(proc.join, 5)  # killed without blocking; reaped off the loop
        assert proc.exitcode == -9
        assert await w.call(Echo(3), timeout=60) == 3
    finally:
        w.kill()


async def test_pool_runs_jobs_in_parallel_processes() -> None:
    results: list[tuple[int, float, float]] = []
    async with worker_pool(2) as pool:
        # warm both workers up so start-up time does not hide overlap
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(lambda: pool.run(Sleep(0.5), timeout=60))

        async def one() -> None:
            results.append(await pool.run(Whoami(1.5), timeout=60))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = results
    assert pid_a != pid_b
    assert start_a < end_b and start_b < end_a  # the two jobs overlapped in time


async def test_training_runs_in_a_worker_and_improves_the_model(tmp_path: Path) -> None:
    """The real train job: a participant's own data file, the task's hyper-parameters, a
    fresh seed."""
    import numpy as np

    from prover import trainfile
    from prover.data import load_dataset, partition, split
    from prover.models import build_model, model_to_bytes
    from prover.train import evaluate_float, fresh_seed

    ds = load_dataset("digits")
    sp = split(ds, seed=1, eval_batch_size=16, num_eval_batches=4, test_fraction=0.2)
    shards = partition(sp.pool_y, 3, scheme="iid", seed=2)
    start = model_to_bytes(build_model("digits-mlp", 0))
    data = tmp_path / "data.npz"
    trainfile.save(data, sp.pool_x[shards[0]], sp.pool_y[shards[0]])
    async with worker_pool(1) as pool:
        trained = await pool.run(
            Train(
                arch="digits-mlp",
                global_weights=start,
                data_file=str(data),
                epochs=5,
                batch_size=16,
                learning_rate_ppm=100_000,
                seed=fresh_seed(),
            ),
            timeout=300,
        )
    tx = sp.test_x.reshape(len(sp.test_x), -1)
    assert (
        evaluate_float("digits-mlp", trained, tx, sp.test_y)
        > evaluate_float("digits-mlp", start, tx, sp.test_y) + 0.3
    )
    assert isinstance(trained, bytes) and np.isfinite(len(trained))


async def test_a_killed_worker_is_replaced_warm_before_the_next_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A missed deadline costs one job: the replacement starts and warms up at once."""
    caplog.set_level(logging.INFO, logger="zkpot.worker")
    async with worker_pool(1, warmup=Whoami(0)) as pool:
        await pool.run(Echo(0), timeout=60)
        worker = pool.workers[0]
        first = worker.pid
        with pytest.raises(JobTimeout):
            await pool.run(Sleep(600), timeout=0.5)
        for _ in range(600):  # no job asks for it: the pool replaces it by itself
            if worker.alive() and worker.pid != first and not worker._lock.locked():
                break
            await trio.sleep(0.05)
        assert worker.alive() and worker.pid != first
        assert any("killed it" in r.message for r in caplog.records), "every kill is logged"
        assert any("warm in" in r.message and str(worker.pid) in r.message for r in caplog.records)
        assert await pool.run(Echo("next"), timeout=60) == "next"


async def test_a_job_nobody_waits_for_is_killed_after_the_grace_period() -> None:
    """A stuck job (ezkl can hang) must not hold the warm worker past its grace period."""
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(1, nursery=nursery, grace_s=0.5)
        try:
            await pool.run(Echo(0), timeout=60)
            first = pool.workers[0].pid
            with trio.move_on_after(0.2):
                await pool.run(Sleep(600), timeout=600)
            assert await pool.run(Echo("after"), timeout=60) == "after"
            assert pool.workers[0].pid != first
        finally:
            nursery.cancel_scope.cancel()
            pool.close()


async def test_the_fault_hook_stalls_the_chosen_job_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "Whoami:2:1.0")
    async with worker_pool(1) as pool:
        first = await pool.run(Whoami(0), timeout=60)
        t0 = trio.current_time()
        second = await pool.run(Whoami(0), timeout=60)
        assert trio.current_time() - t0 >= 1.0 and first[0] == second[0]
        t0 = trio.current_time()
        await pool.run(Whoami(0), timeout=60)
        assert trio.current_time() - t0 < 1.0


@pytest.mark.parametrize("spec", ["Prove", "Prove:x:1", "Prove:0:1", "Prove:1:-1", "Prove:1:2:3"])
def test_a_malformed_fault_spec_is_refused_with_the_reason(spec: str) -> None:
    with pytest.raises(ValueError, match="JOB:N:SECONDS"):
        Faults.parse(spec)


async def test_a_worker_warming_up_is_not_killed_for_a_job_that_never_started() -> None:
    """A caller giving up while the worker warms up drops its job; the warm-up goes on."""
    async with trio.open_nursery() as nursery:
        pool = WorkerPool(1, nursery=nursery, warmup=Sleep(1.5), grace_s=0.3)
        try:
            with trio.move_on_after(0.2):
                await pool.run(Echo("stale"), timeout=60)
            await trio.sleep(0.5)  # past the grace period, still warming up
            worker = pool.workers[0]
            pid = worker.pid
            assert pid is not None and worker.restarts == 0
            assert await pool.run(Echo("fresh"), timeout=60) == "fresh"
            assert worker.pid == pid and worker.restarts == 0
        finally:
            nursery.cancel_scope.cancel()
            pool.close()
