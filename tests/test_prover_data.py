"""Datasets, the chain's split and the participants' partition (prover.data)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prover.data import (
    DatasetError,
    load_dataset,
    partition,
    restricted_unpickle,
    split,
)

# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits")


def test_digits_is_built_in_scaled_and_labelled(digits: Any) -> None:
    assert digits.name == "digits" and digits.input_shape == (64,) and digits.num_classes == 10
    assert digits.x.shape == (1797, 64) and digits.x.dtype == np.float32
    assert digits.y.shape == (1797,) and digits.y.dtype == np.int64
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0
    assert set(np.unique(digits.y).tolist()) == set(range(10))


def test_unknown_dataset_and_missing_path_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="needs a directory"):
        load_dataset("cifar10")  # mnist without one is the built-in 5k (test_builtin_data)
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("cifar10", str(tmp_path / "nope"))


# --------------------------------------------------------------------------- mnist

N_MNIST = 12


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return head + payload


def _mnist_files(
    rng: np.random.Generator, n: int = N_MNIST
) -> tuple[bytes, bytes, np.ndarray, np.ndarray]:
    pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    images = _idx(0x803, (n, 28, 28), pixels.tobytes())
    return images, _idx(0x801, (n,), labels.tobytes()), pixels, labels


def _write_mnist(d: Path, images: bytes, labels: bytes, *, gz: bool = False) -> tuple[Path, Path]:
    d.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    ip, lp = d / f"train-images-idx3-ubyte{suffix}", d / f"train-labels-idx1-ubyte{suffix}"
    ip.write_bytes(gzip.compress(images) if gz else images)
    lp.write_bytes(gzip.compress(labels) if gz else labels)
    return ip, lp


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_idx_files_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    images, labels, pixels, y = _mnist_files(np.random.default_rng(1))
    _write_mnist(tmp_path, images, labels, gz=gz)
    ds = load_dataset("mnist", str(tmp_path))
    assert ds.input_shape == (784,) and ds.num_classes == 10
    assert ds.x.shape == (N_MNIST, 784) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, pixels.reshape(N_MNIST, 784).astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y, y.astype(np.int64))
    assert ds.y.dtype == np.int64


def _corrupt_mnist(kind: str, rng: np.random.Generator) -> tuple[bytes, bytes, str, str]:
    """(images, labels, file that is wrong, expected message) for one corruption."""
    images, labels, pixels, y = _mnist_files(rng)
    img, lab = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
    if kind == "images-magic":
        return b"\x00\x00\x08\x02" + images[4:], labels, img, "bad magic number 0x00000802"
    if kind == "labels-magic":
        return images, _idx(0x803, (N_MNIST,), y.tobytes()), lab, "bad magic"
    if kind == "truncated":
        return images[:-5], labels, img, "truncated"
    if kind == "header-truncated":
        return images[:10], labels, img, "truncated"
    if kind == "trailing":
        return images + b"\x00", labels, img, "trailing bytes"
    if kind == "count":
        return images, _idx(0x801, (N_MNIST - 1,), y[:-1].tobytes()), lab, "wrong count"
    if kind == "dims":
        bad = _idx(0x803, (N_MNIST, 27, 28), pixels[:, :27, :].tobytes())
        return bad, labels, img, "wrong dimensions 27x28, expected 28x28"
    if kind == "zero-count":
        return _idx(0x803, (0, 28, 28), b""), labels, img, "bad item count 0"
    if kind == "label-range":
        return images, _idx(0x801, (N_MNIST,), bytes([10] * N_MNIST)), lab, "out of range"
    raise AssertionError(kind)


MNIST_CORRUPTIONS = [
    "images-magic",
    "labels-magic",
    "truncated",
    "header-truncated",
    "trailing",
    "count",
    "dims",
    "zero-count",
    "label-range",
]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("kind", MNIST_CORRUPTIONS)
def test_mnist_rejects_corrupt_files_naming_file_and_fault(
    tmp_path: Path, kind: str, gz: bool
) -> None:
    images, labels, bad_file, message = _corrupt_mnist(kind, np.random.default_rng(2))
    _write_mnist(tmp_path, images, labels, gz=gz)
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset("mnist", str(tmp_path))
    assert bad_file in str(e.value)


def test_mnist_missing_file_and_broken_gzip(tmp_path: Path) -> None:
    images, labels, _, _ = _mnist_files(np.random.default_rng(3))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(images)
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: missing file"):
        load_dataset("mnist", str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz: cannot read"):
        load_dataset("mnist", str(tmp_path))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels)[:-12])
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", str(tmp_path))


def test_mnist_header_cannot_make_the_loader_inflate_a_huge_gzip(tmp_path: Path) -> None:
    # A header claiming 10^7 images but a tiny payload fails as truncated, quickly.
    images = _idx(0x803, (10_000_000, 28, 28), b"\x00" * 100)
    _, labels, _, _ = _mnist_files(np.random.default_rng(4))
    _write_mnist(tmp_path, images, labels, gz=True)
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("mnist", str(tmp_path))


# --------------------------------------------------------------------------- cifar10

CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def _cifar_batch(rng: np.random.Generator, n: int, *, bytes_keys: bool) -> dict[Any, Any]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    batch = {
        "batch_label": "training batch 1 of 5",
        "labels": labels,
        "data": data,
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    if bytes_keys:
        return {k.encode(): v for k, v in batch.items()}
    return batch


def _write_cifar(
    d: Path, *, protocol: int = 2, bytes_keys: bool = False, n: int = 3
) -> list[dict[Any, Any]]:
    rng = np.random.default_rng(5)
    batches = []
    for name in CIFAR_FILES:
        batch = _cifar_batch(rng, n, bytes_keys=bytes_keys)
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches.append(batch)
    return batches


@pytest.mark.parametrize(("protocol", "bytes_keys"), [(2, False), (2, True), (5, False)])
def test_cifar10_loads_the_six_pickled_batches(
    tmp_path: Path, protocol: int, bytes_keys: bool
) -> None:
    batches = _write_cifar(tmp_path, protocol=protocol, bytes_keys=bytes_keys)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.x.shape == (18, 3, 32, 32) and ds.x.dtype == np.float32

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    first = batches[0][key("data")][0]
    # Row layout of the official files: 1024 red, 1024 green, 1024 blue, each row-major.
    np.testing.assert_array_equal(ds.x[0, 1, 2, 3], first[1024 + 2 * 32 + 3] / np.float32(255))
    np.testing.assert_array_equal(ds.x[0], first.reshape(3, 32, 32).astype(np.float32) / 255)
    expected_y = [v for b in batches for v in b[key("labels")]]
    assert ds.y.tolist() == expected_y and ds.y.dtype == np.int64
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0


_PurePythonPickler: Any = pickle._Pickler


class _Py2Pickler(_PurePythonPickler):  # type: ignore[misc]
    """Writes what Python 2 wrote for the official files: every str and bytes as a
    BINSTRING, and numpy's pre-2.0 module names."""

    def save_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch: ClassVar[dict[type, Any]] = dict(_PurePythonPickler.dispatch)
    dispatch[str] = save_str
    dispatch[bytes] = save_str


def test_cifar10_loads_python2_pickles_like_the_official_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    batches = [_cifar_batch(rng, 2, bytes_keys=False) for _ in CIFAR_FILES]
    for name, batch in zip(CIFAR_FILES, batches, strict=True):
        out = io.BytesIO()
        _Py2Pickler(out, protocol=2).dump(batch)
        raw = out.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"_codecs" not in raw and b"numpy.core.multiarray\n_reconstruct" in raw
        (tmp_path / name).write_bytes(raw)
    ds = load_dataset("cifar10", str(tmp_path))
    expected = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(ds.x, expected.astype(np.float32) / 255)
    assert ds.y.tolist() == [v for b in batches for v in b["labels"]]


class _Evil:
    """Unpickling this runs `touch MARKER` through os.system with a normal unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_rejects_a_malicious_pickle_without_running_it(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {"data": _Evil(marker), "labels": [1]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3: .*forbidden global (posix|os)\.system"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(eval, protocol=2),
        b"cbuiltins\nexec\n(S'import os'\ntR.",
        b"c__builtin__\neval\n(S'1'\ntR.",
        b"cos\nsystem\n(S'true'\ntR.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
    ],
)
def test_restricted_unpickler_refuses_every_other_global(payload: bytes) -> None:
    with pytest.raises(pickle.UnpicklingError, match="forbidden global"):
        restricted_unpickle(payload)


def test_restricted_unpickler_only_allows_latin1_codec() -> None:
    bad = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(pickle.UnpicklingError, match="encoding 'rot13'"):
        restricted_unpickle(bad)


def _cifar_corruption(d: Path, kind: str) -> tuple[str, str]:
    """Write one bad batch over a good set; (file, message) expected in the error."""
    rng = np.random.default_rng(6)
    good = _cifar_batch(rng, 3, bytes_keys=False)
    target = d / "data_batch_2"
    if kind == "missing":
        (d / "test_batch").unlink()
        return "test_batch", "missing file"
    if kind == "garbage":
        target.write_bytes(b"\x00\x01 definitely not a pickle")
        return "data_batch_2", "not a valid CIFAR-10 pickle"
    if kind == "truncated":
        target.write_bytes(pickle.dumps(good, protocol=2)[:-40])
        return "data_batch_2", "not a valid CIFAR-10 pickle"
    if kind == "not-dict":
        target.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
        return "data_batch_2", "a list, not a dict"
    if kind == "wrong-keys":
        target.write_bytes(pickle.dumps({"images": good["data"], "labels": [1, 2, 3]}))
        return "data_batch_2", "wrong keys: missing key 'data'"
    if kind == "row-width":
        bad = dict(good, data=good["data"][:, :3000])
        target.write_bytes(pickle.dumps(bad, protocol=2))
        return "data_batch_2", "3000 values, expected 3072"
    if kind == "dtype":
        bad = dict(good, data=good["data"].astype(np.float32))
        target.write_bytes(pickle.dumps(bad, protocol=2))
        return "data_batch_2", "2-d uint8 array"
    if kind == "count":
        bad = dict(good, labels=good["labels"][:2])
        target.write_bytes(pickle.dumps(bad, protocol=2))
        return "data_batch_2", "wrong count: 2 labels for 3 images"
    if kind == "label-type":
        bad = dict(good, labels=["cat", "dog", "cat"])
        target.write_bytes(pickle.dumps(bad, protocol=2))
        return "data_batch_2", "list of integers"
    if kind == "label-range":
        bad = dict(good, labels=[0, 10, 1])
        target.write_bytes(pickle.dumps(bad, protocol=2))
        return "data_batch_2", "out of range"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "garbage",
        "truncated",
        "not-dict",
        "wrong-keys",
        "row-width",
        "dtype",
        "count",
        "label-type",
        "label-range",
    ],
)
def test_cifar10_rejects_bad_batches_naming_file_and_fault(tmp_path: Path, kind: str) -> None:
    _write_cifar(tmp_path)
    bad_file, message = _cifar_corruption(tmp_path, kind)
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset("cifar10", str(tmp_path))
    assert bad_file in str(e.value)


# --------------------------------------------------------------------------- split


def _split(ds: Any, seed: int = 7) -> Any:
    return split(ds, seed=seed, eval_batch_size=16, num_eval_batches=20, test_fraction=0.2)


def test_split_is_exact_disjoint_and_complete(digits: Any) -> None:
    s = _split(digits)
    assert len(s.eval_batches) == 20
    for bx, by in s.eval_batches:
        assert bx.shape == (16, 64) and by.shape == (16,)
        assert bx.dtype == np.float32 and by.dtype == np.int64
    assert len(s.test_y) == int(1797 * 0.2)
    assert len(s.pool_y) == 1797 - 320 - len(s.test_y)
    parts = [set(s.eval_index.tolist()), set(s.test_index.tolist()), set(s.pool_index.tolist())]
    assert sum(len(p) for p in parts) == 1797
    assert set.union(*parts) == set(range(1797))
    np.testing.assert_array_equal(s.pool_x, digits.x[s.pool_index])
    np.testing.assert_array_equal(s.test_y, digits.y[s.test_index])
    np.testing.assert_array_equal(
        np.concatenate([by for _, by in s.eval_batches]), digits.y[s.eval_index]
    )


def test_split_is_deterministic_per_seed(digits: Any) -> None:
    a, b, c = _split(digits, 7), _split(digits, 7), _split(digits, 8)
    np.testing.assert_array_equal(a.eval_index, b.eval_index)
    np.testing.assert_array_equal(a.pool_index, b.pool_index)
    for (ax, ay), (bx, by) in zip(a.eval_batches, b.eval_batches, strict=True):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(ay, by)
    assert not np.array_equal(a.eval_index, c.eval_index)


def test_split_rejects_too_small_datasets_and_bad_arguments(digits: Any) -> None:
    with pytest.raises(DatasetError, match="too small: 1797 examples cannot hold 1600"):
        split(digits, seed=0, eval_batch_size=16, num_eval_batches=100, test_fraction=0.2)
    with pytest.raises(DatasetError, match="too small"):
        split(digits, seed=0, eval_batch_size=1797, num_eval_batches=1, test_fraction=0.0)
    with pytest.raises(DatasetError, match="test_fraction"):
        split(digits, seed=0, eval_batch_size=16, num_eval_batches=1, test_fraction=1.0)
    with pytest.raises(DatasetError, match=">= 1"):
        split(digits, seed=0, eval_batch_size=0, num_eval_batches=1, test_fraction=0.1)


# --------------------------------------------------------------------------- partition


def _check_partition(shards: list[np.ndarray], n: int, k: int) -> None:
    assert len(shards) == k
    assert all(len(s) > 0 for s in shards)
    assert all(s.dtype == np.int64 for s in shards)
    assert all(np.all(np.diff(s) > 0) for s in shards)  # sorted, no repeats
    every = np.concatenate(shards)
    assert len(every) == n and set(every.tolist()) == set(range(n))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    k=st.integers(1, 40),
    classes=st.integers(1, 10),
    scheme=st.sampled_from(["iid", "dirichlet"]),
    alpha=st.sampled_from([1e-6, 0.01, 0.1, 0.5, 1.0, 100.0]),
    seed=st.integers(0, 2**63),
)
def test_partition_assigns_every_index_once_and_no_shard_empty(
    n: int, k: int, classes: int, scheme: str, alpha: float, seed: int
) -> None:
    y = np.random.default_rng(n).integers(0, classes, size=n)
    if n < k:
        with pytest.raises(DatasetError, match="empty shard"):
            partition(y, k, scheme=scheme, alpha=alpha, seed=seed)
        return
    shards = partition(y, k, scheme=scheme, alpha=alpha, seed=seed)
    _check_partition(shards, n, k)
    again = partition(y, k, scheme=scheme, alpha=alpha, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    if scheme == "iid":
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1


def _label_skew(y: np.ndarray, shards: list[np.ndarray]) -> float:
    """Mean share of each shard's most common label."""
    return float(np.mean([np.bincount(y[s]).max() / len(s) for s in shards]))


def test_dirichlet_small_alpha_skews_labels_and_large_alpha_approaches_iid(digits: Any) -> None:
    pool_y = _split(digits).pool_y
    iid = partition(pool_y, 8, scheme="iid", seed=1)
    skewed = partition(pool_y, 8, scheme="dirichlet", alpha=0.1, seed=1)
    flat = partition(pool_y, 8, scheme="dirichlet", alpha=1000.0, seed=1)
    for shards in (iid, skewed, flat):
        _check_partition(shards, len(pool_y), 8)
    assert _label_skew(pool_y, skewed) > 0.5
    assert _label_skew(pool_y, iid) < 0.25 and _label_skew(pool_y, flat) < 0.25
    different = partition(pool_y, 8, scheme="dirichlet", alpha=0.1, seed=2)
    assert any(not np.array_equal(a, b) for a, b in zip(skewed, different, strict=True))


def test_partition_rejects_bad_arguments() -> None:
    y = np.arange(20) % 4
    with pytest.raises(DatasetError, match="alpha > 0"):
        partition(y, 3, scheme="dirichlet", alpha=0.0, seed=0)
    with pytest.raises(DatasetError, match="unknown partition scheme 'zipf'"):
        partition(y, 3, scheme="zipf", seed=0)
    with pytest.raises(DatasetError, match="cannot partition 20 examples among 21"):
        partition(y, 21, scheme="iid", seed=0)
    with pytest.raises(DatasetError, match="num_participants"):
        partition(y, 0, scheme="iid", seed=0)
