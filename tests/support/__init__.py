"""Helpers shared by the tests and the benchmarks, and the scripts tests run as child processes.

Not an installed package: pytest puts tests/ on sys.path (`pythonpath` in pyproject.toml),
the benchmarks insert it themselves, and children get it through `child_env()`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent


def child_env() -> dict[str, str]:
    """The environment for a child Python: it imports this checkout and `support`, installed or not."""
    env = dict(os.environ)
    path = [str(TESTS_DIR), str(REPO_ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
