"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from support.apinode import Node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The API's and the CLI's node: a chain of real blocks in a real store (support.apinode)."""
    from support.apinode import build_node  # imports torch: only the modules that use it pay

    n = build_node(tmp_path_factory.mktemp("node") / "store")
    yield n
    n.store.close()


@pytest.fixture(scope="module")
def busy_core() -> Iterator[None]:
    """One core kept busy for the module: the end-to-end tests must hold on a loaded machine.

    A deadline is an upper bound, not a schedule; with ZKPOT_TEST_BUSY=1 these tests run
    the network with one of the machine's cores taken by a spinning process.
    """
    import os
    import subprocess
    import sys

    if os.environ.get("ZKPOT_TEST_BUSY") != "1":  # opt-in until it is measured on CI's machine
        yield
        return
    # Spins until its parent (this test run) is gone, so even a killed run leaves no burner.
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"
    burner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()
