"""The compose testnet under a real Docker engine: docker/test-compose.sh, run whole.

It starts dockerd when none runs (root), builds the image (a debootstrap base when no
registry answers), brings docker/compose.yml up, waits for all four nodes to agree on a
final block at height >= 2, calls the CLI inside a container and from the host, and
tears everything down. Measured on CI's kind of machine (2 cores): 5 min 40 s cold, 3 min
23 s with the base image and build cache in place. Skipped, with the reason, where no
engine can run. A second run with a node API port taken must fail at that step, by name,
and leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "docker" / "test-compose.sh"
PROJECT = "zkpot-compose-test"


def _why_not() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return None
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return "no Docker engine answers and none can be started here (needs root and dockerd)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("busy_core"),
    pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""),
]


def _run(env: dict[str, str] | None = None, timeout: float = 1800) -> tuple[int, str]:
    r = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return r.returncode, r.stdout + r.stderr


def test_the_compose_testnet_agrees_on_a_final_block_under_a_real_engine() -> None:
    rc, out = _run()
    print(out)  # the step timings, in the test's captured output
    assert rc == 0, out[-4000:]
    assert "every node: final block" in out
    for step in ("CLI through compose exec", "CLI from the host"):
        assert f"== {step}" in out
    assert out.count("    height ") == 2, "both CLI calls printed the head"


def test_a_failing_step_is_named_and_everything_is_torn_down() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 8646))  # node1's published API port
        taken.listen()
        rc, out = _run(timeout=900)
    assert rc == 1, out[-4000:]
    assert "FAILED at step 'compose up': port 8646 on 127.0.0.1 is in use" in out
    assert "teardown: containers, networks, volumes" in out
    if "stopping the dockerd this script started" not in out:  # an engine of the machine's
        ps = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            capture_output=True,
            text=True,
        )
        assert ps.stdout.strip() == ""
