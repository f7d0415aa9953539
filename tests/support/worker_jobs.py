"""Jobs for the worker-process tests: each misbehaves in one way a real job can.

They live in an importable module because a job is pickled by reference: the
worker process imports this module to unpickle it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from prover.client import Job


@dataclass(frozen=True)
class Echo(Job[object]):
    value: object

    def execute(self) -> object:
        return self.value


@dataclass(frozen=True)
class Whoami(Job[tuple[int, float, float]]):
    """(pid, start, end) of a sleep, to show which process ran it and when."""

    seconds: float

    def execute(self) -> tuple[int, float, float]:
        start = time.time()
        time.sleep(self.seconds)
        return os.getpid(), start, time.time()


@dataclass(frozen=True)
class Sleep(Job[None]):
    seconds: float

    def execute(self) -> None:
        time.sleep(self.seconds)


@dataclass(frozen=True)
class Crash(Job[None]):
    code: int

    def execute(self) -> None:
        os._exit(self.code)


@dataclass(frozen=True)
class Fail(Job[None]):
    message: str

    def execute(self) -> None:
        raise ValueError(self.message)


def _refuse() -> Unloadable:
    raise RuntimeError("not loadable here")


@dataclass(frozen=True)
class Unloadable(Job[None]):
    """Pickles fine in the node but cannot be unpickled in the worker."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _refuse, ()

    def execute(self) -> None:
        raise AssertionError("never loaded, so never run")
