"""node.memo: an answer computed once per key, even when asked twice at once; a failed
computation stores nothing; the oldest answers leave first."""

from __future__ import annotations

import pytest
import trio

from node.memo import Memo


async def test_two_callers_share_one_computation_and_a_failure_is_not_kept() -> None:
    memo: Memo[str, int] = Memo(bound=2)
    runs: list[str] = []

    async def slow(key: str) -> int:
        runs.append(key)
        await trio.sleep(0.01)
        return len(runs)

    got: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(lambda: _append(got, memo.get("a", lambda: slow("a"))))
    assert got == [1, 1, 1] and runs == ["a"]

    async def fail() -> int:
        raise ValueError("worker died")

    with pytest.raises(ValueError):
        await memo.get("b", fail)
    assert await memo.get("b", lambda: slow("b")) == 2  # tried again, not the failure
    await memo.get("c", lambda: slow("c"))
    assert await memo.get("a", lambda: slow("a")) == 4  # "a" was the oldest: evicted


async def _append(out: list[int], value: object) -> None:
    out.append(await value)  # type: ignore[misc]
