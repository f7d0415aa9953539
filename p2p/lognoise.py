"""py-libp2p's dial failures, said once and then counted.

With one peer down py-libp2p logs `Failed to open TCP stream …` at ERROR for every
dial the reconnect loop makes (80 lines in 50 s were seen): the first is said as one
zkpot warning, later ones within WINDOW_S are counted and the count is said with the
next failure after the window. Nothing else of the library's output changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("zkpot.p2p")

TCP_LOGGER = "libp2p.transport.tcp.tcp"
WINDOW_S = 60.0
PREFIXES = ("Failed to open TCP stream", "Unexpected error opening TCP stream")


class DialFailures(logging.Filter):
    """Drops the library's per-dial error lines, saying them as rate-limited warnings."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.counted = 0
        self.since: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith(PREFIXES):
            return True
        now = self.clock()
        if self.since is None:
            log.warning("a peer cannot be reached (%s); further failures are counted", text)
            self.since = now
        elif now - self.since >= WINDOW_S:
            log.warning(
                "%d dials failed in the last %.0f s (a peer is down?); latest: %s",
                self.counted + 1,
                now - self.since,
                text,
            )
            self.counted, self.since = 0, now
        else:
            self.counted += 1
        return False


def quiet_dial_failures() -> None:
    """Install the filter once per process (every host of a process shares the logger)."""
    lg = logging.getLogger(TCP_LOGGER)
    if not any(isinstance(f, DialFailures) for f in lg.filters):
        lg.addFilter(DialFailures())
