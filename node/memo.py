"""Answers that are a pure function of their key, computed once: the checker's
verifications and model checks, the explorer's test accuracies, a parent model's
commitment. A caller asking while the same key is being computed waits for that
computation instead of starting a second one; a computation that raises stores
nothing (the next caller tries again). Bounded: the oldest answers go first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._done: OrderedDict[K, V] = OrderedDict()
        self._running: dict[K, trio.Event] = {}

    def peek(self, key: K) -> V | None:
        """The answer if it is known; never computes (a reader that must not wait)."""
        return self._done.get(key)

    def computing(self, key: K) -> bool:
        return key in self._running

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        while key in self._running:
            await self._running[key].wait()
        if key in self._done:
            return self._done[key]
        self._running[key] = done = trio.Event()
        try:
            value = await compute()
        finally:
            del self._running[key]
            done.set()
        self._done[key] = value
        while len(self._done) > self.bound:
            self._done.popitem(last=False)
        return value
