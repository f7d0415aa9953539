"""Which round this node is in and when it opened it: moved by blocks, reveals and the timer.

The decisions are consensus.schedule's (`first_round`, `next_round`, `round_end`);
this object keeps the state and wakes the round loop when a round ends early.
"""

from __future__ import annotations

import trio

from consensus import schedule
from consensus.types import Genesis
from node.interfaces import Clock


class RoundClock:
    def __init__(self, genesis: Genesis, clock: Clock) -> None:
        self.genesis = genesis
        self.clock = clock
        self.current = 0
        self.opened: dict[int, int] = {0: genesis.timing.genesis_ms}
        self._moved = trio.Event()

    def start(self, head_round: int | None) -> None:
        """Where a node starting now stands (after a restart: past its head's round)."""
        rnd, at = schedule.first_round(self.genesis, self.clock(), head_round)
        self._open(rnd, at)

    def opened_at(self, rnd: int) -> int:
        """When this node opened `rnd` (its slot, for a round it has not opened)."""
        return self.opened.get(rnd, schedule.slot_start(self.genesis, rnd))

    def observe(self, *, head_round: int | None = None, revealed: int | None = None) -> None:
        """A block became head, or the publisher revealed a round: maybe open a later round now."""
        nxt = schedule.next_round(self.current, head_round, revealed)
        if nxt > self.current:
            self._open(nxt, self.clock())

    def expire(self, rnd: int) -> None:
        """Round `rnd` ran out of time without a block: the next one opens at its end."""
        if rnd == self.current:
            self._open(rnd + 1, schedule.round_end(self.genesis, self.opened_at(rnd)))

    def _open(self, rnd: int, at: int) -> None:
        if rnd < self.current:
            return
        self.current = rnd
        self.opened[rnd] = at
        for old in [r for r in self.opened if r < rnd - 16]:
            del self.opened[old]
        self._moved.set()
        self._moved = trio.Event()

    async def wait_past(self, rnd: int, deadline_ms: int) -> None:
        """Until the node is past round `rnd` or the deadline passes."""
        while self.current <= rnd:
            left = (deadline_ms - self.clock()) / 1000
            if left <= 0:
                return
            with trio.move_on_after(left):
                await self._moved.wait()
