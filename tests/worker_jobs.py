"""Jobs for the worker-process tests: each misbehaves in one way a real job can."""

from __future__ import annotations

import os
import time


def echo(value: object) -> object:
    return value


def whoami(seconds: float) -> list[float]:
    start = time.time()
    time.sleep(seconds)
    return [os.getpid(), start, time.time()]


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def crash(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)


JOBS = {"echo": echo, "whoami": whoami, "sleep": sleep, "crash": crash, "fail": fail}
