"""A participant's own training data file (prover.trainfile): every way it can be wrong
gets an error that names the file and the problem, at node start, never mid-round."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from prover import trainfile
from prover.data import DatasetError

SHAPE, CLASSES = (64,), 10


def _good() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(0)
    return rng.random((20, 64)).astype(np.float32), rng.integers(0, 10, 20)


def test_round_trip_flattens_and_types(tmp_path: Path) -> None:
    x, y = _good()
    path = tmp_path / "d.npz"
    trainfile.save(path, x.reshape(20, 8, 8), y)  # any shape whose size fits is flattened
    got_x, got_y = trainfile.load(path, (8, 8), CLASSES)
    assert got_x.shape == (20, 64) and got_x.dtype == np.float32
    assert got_y.dtype == np.int64 and (got_y == y).all()


def _npz(path: Path, **arrays: object) -> None:
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing", lambda p: None, "cannot read it"),
    ("garbage", lambda p: p.write_bytes(b"not a zip at all"), "not a readable .npz"),
    ("no y", lambda p: _npz(p, x=_good()[0]), "needs arrays named 'x' and 'y'"),
    (
        "empty",
        lambda p: _npz(p, x=np.zeros((0, 64), np.float32), y=np.zeros(0, int)),
        "no examples",
    ),
    ("int x", lambda p: _npz(p, x=np.zeros((3, 64), int), y=np.zeros(3, int)), "floating point"),
    (
        "shape",
        lambda p: _npz(p, x=np.zeros((3, 63), np.float32), y=np.zeros(3, int)),
        r"has shape \(3, 63\); this task needs \(n, 64\)",
    ),
    ("nan", lambda p: _npz(p, x=np.full((3, 64), np.nan, np.float32), y=np.zeros(3, int)), "NaN"),
    ("float y", lambda p: _npz(p, x=np.zeros((3, 64), np.float32), y=np.zeros(3)), "integer array"),
    (
        "count",
        lambda p: _npz(p, x=np.zeros((3, 64), np.float32), y=np.zeros(2, int)),
        "3 inputs but 2",
    ),
    ("label", lambda p: _npz(p, x=np.zeros((3, 64), np.float32), y=np.array([0, 10, 1])), "0..9"),
    ("object", lambda p: _npz(p, x=np.array([object()]), y=np.zeros(1, int)), "not a readable"),
    (
        "raw digits pixels",  # issue 22: 0..16 passed node init silently and trained nothing
        lambda p: _npz(p, x=np.full((3, 64), 16.0), y=np.zeros(3, int)),
        r"ranges over 16\.\.16; every task's inputs are scaled to \[0, 1\]",
    ),
    (
        "negative",
        lambda p: _npz(p, x=np.full((3, 64), -0.5, np.float32), y=np.zeros(3, int)),
        "divide raw digits",
    ),
]


@pytest.mark.parametrize(("name", "write", "why"), CASES, ids=[c[0] for c in CASES])
def test_a_file_that_does_not_fit_gets_a_clear_error(
    tmp_path: Path, name: str, write: Callable[[Path], None], why: str
) -> None:
    path = tmp_path / f"{name}.npz"
    write(path)
    with pytest.raises(DatasetError, match=why) as err:
        trainfile.load(path, SHAPE, CLASSES)
    assert str(path) in str(err.value)


def test_float64_inputs_in_range_are_taken_as_float32(tmp_path: Path) -> None:
    path = tmp_path / "f64.npz"
    _npz(path, x=np.full((3, 64), 0.25, np.float64), y=np.zeros(3, int))
    x, _ = trainfile.load(path, SHAPE, CLASSES)
    assert x.dtype == np.float32 and float(x.max()) == 0.25


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    trainfile.save(path, *_good())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="not a readable"):
        trainfile.load(path, SHAPE, CLASSES)
