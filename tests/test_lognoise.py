"""py-libp2p's per-dial error lines become one rate-limited zkpot warning (issue 22)."""

from __future__ import annotations

import logging

import pytest

from p2p.lognoise import TCP_LOGGER, DialFailures


def test_eighty_dial_failures_in_fifty_seconds_are_two_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    lib = logging.getLogger(TCP_LOGGER)
    installed = list(lib.filters)  # a host made by an earlier test installed the real one
    for f in installed:
        lib.removeFilter(f)
    noise = DialFailures(lambda: now[0])
    lib.addFilter(noise)
    try:
        with caplog.at_level(logging.DEBUG):
            for i in range(80):  # a peer down: the reconnect loop dials every ~0.6 s
                now[0] = i * 0.625
                lib.error("Failed to open TCP stream: %s", "[Errno 111] Connection refused")
            now[0] = 61.0
            lib.error("Failed to open TCP stream: %s", "[Errno 111] Connection refused")
            lib.error("dial tcp something else")  # other lines pass untouched
    finally:
        lib.removeFilter(noise)
        for f in installed:
            lib.addFilter(f)
    ours = [r for r in caplog.records if r.name == "zkpot.p2p"]
    theirs = [r for r in caplog.records if r.name == TCP_LOGGER]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.WARNING]
    assert "cannot be reached" in ours[0].getMessage()
    assert ours[1].getMessage().startswith("80 dials failed in the last 61 s")
    assert [r.getMessage() for r in theirs] == ["dial tcp something else"]
