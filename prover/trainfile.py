"""A participant's own training data: one `.npz` file that never leaves its node.

Format (numpy's `.npz`, no pickled objects):
  x  floating point (any width; kept as float32), shape (n, *input_shape) or
     (n, prod(input_shape)): the inputs, in [0, 1] as every dataset's are (digits: 64
     pixels, mnist: 784, cifar10: 3x32x32); values outside are refused
  y  integers, shape (n,): labels in 0 .. num_classes - 1
with n >= 1. The file comes from the operator's disk, so it is untrusted: every problem
is a DatasetError that names the file and what is wrong, found when the node starts
(and again in the worker that trains), never in the middle of a round.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from prover.data import DatasetError, FloatArray, IntArray

MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024
INPUT_RANGE = (0.0, 1.0)  # prover.data: every dataset's inputs, so every held-out batch's


def save(path: Path, x: npt.ArrayLike, y: npt.ArrayLike) -> None:
    """Write (x, y) in the format above (x as float32, y as int64)."""
    with path.open("wb") as f:
        np.savez(f, x=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64))


def load(path: Path, input_shape: Sequence[int], num_classes: int) -> tuple[FloatArray, IntArray]:
    """(x flattened to (n, prod(input_shape)) float32, y int64), or DatasetError."""
    where = f"training data file {path}"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read it ({exc.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise DatasetError(f"{where}: {size} bytes, more than the {MAX_FILE_BYTES} allowed")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if not {"x", "y"} <= names:
                raise DatasetError(
                    f"{where}: needs arrays named 'x' and 'y', has {sorted(names) or 'none'}"
                )
            x, y = npz["x"], npz["y"]
    except DatasetError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{where}: not a readable .npz file ({exc})") from None
    features = math.prod(input_shape)
    if x.ndim < 1 or len(x) == 0:
        raise DatasetError(f"{where}: 'x' holds no examples")
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{where}: 'x' must be floating point, not {x.dtype}")
    if tuple(x.shape[1:]) not in (tuple(input_shape), (features,)):
        raise DatasetError(
            f"{where}: 'x' has shape {tuple(x.shape)}; this task needs (n, "
            f"{', '.join(str(d) for d in input_shape)})"
        )
    if not np.all(np.isfinite(x)):
        raise DatasetError(f"{where}: 'x' holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < INPUT_RANGE[0] or hi > INPUT_RANGE[1]:
        raise DatasetError(
            f"{where}: 'x' ranges over {lo:g}..{hi:g}; every task's inputs are scaled to "
            f"[{INPUT_RANGE[0]:g}, {INPUT_RANGE[1]:g}] as its dataset's are (divide raw digits "
            "pixels, 0..16, by 16; MNIST and CIFAR-10 bytes, 0..255, by 255): a model trained "
            "at another scale scores nothing on the held-out batches"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: 'y' must be a 1-d integer array, not {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DatasetError(f"{where}: {len(x)} inputs but {len(y)} labels")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DatasetError(
            f"{where}: labels must be in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}"
        )
    return x.reshape(len(x), features).astype(np.float32), y.astype(np.int64)
