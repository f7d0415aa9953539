"""Which round this node is in and when it opened it: moved by blocks, reveals and the timer.

The decisions are consensus.schedule's (`first_round`, `next_round`, `round_end`);
this object keeps the state and wakes the round loop when a round ends early.
"""

from __future__ import annotations

from collections.abc import Callable

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
        self._held: tuple[int, Callable[[], int]] | None = None  # a round waiting to open

    def start(self, head_round: int | None) -> None:
        """Where a node starting now stands (after a restart: past its head's round)."""
        rnd, at = schedule.first_round(self.genesis, self.clock(), head_round)
        self._open(rnd, at)

    def opened_at(self, rnd: int) -> int:
        """When this node opened `rnd` (its slot, for a round it has not opened)."""
        return self.opened.get(rnd, schedule.slot_start(self.genesis, rnd))

    def observe(
        self,
        *,
        head_round: int | None = None,
        revealed: int | None = None,
        hold: Callable[[], int] | None = None,
    ) -> None:
        """A block became head, or the publisher revealed a round: maybe open a later round
        now. `hold`: the head keeps its parent's model under an aggregating rule, so the
        round after it opens only once `hold()` (a time, re-read as the round's
        aggregation goes on) has passed (consensus.aggpolicy.keep_parent_opens_next_at)."""
        if hold is not None and head_round is not None:
            if head_round + 1 > self.current:
                self._held = (head_round + 1, hold)
                self._wake()
            head_round = None
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
        if self._held is not None and self._held[0] <= rnd:
            self._held = None
        for old in [r for r in self.opened if r < rnd - 16]:
            del self.opened[old]
        self._wake()

    def _wake(self) -> None:
        self._moved.set()
        self._moved = trio.Event()

    async def wait_past(self, rnd: int, deadline_ms: int) -> None:
        """Until the node is past round `rnd` or the deadline passes (a held round opens
        here once its time has come)."""
        while self.current <= rnd:
            now = self.clock()
            until = deadline_ms
            if self._held is not None:
                target, hold = self._held
                at = hold()
                if at <= now:
                    self._open(target, now)
                    continue
                until = min(until, at)
            if deadline_ms <= now:
                return
            with trio.move_on_after((until - now) / 1000):
                await self._moved.wait()
