"""Local training of the global model on a participant's private shard.

Training is deterministic given the secret seed (single-threaded, deterministic torch
algorithms, shuffling from a local PCG64 stream), so a run can be reproduced by its
owner; the seed is fresh and secret every round because a KZG commitment is
deterministic too: anyone who could re-run the training could recognise the weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from prover.models import get_arch, model_from_bytes, model_to_bytes

_EVAL_CHUNK = 1024


def fresh_seed() -> int:
    """A secret 64-bit training seed from the OS (fits a msgpack uint64)."""
    return int.from_bytes(os.urandom(8), "little")


@contextmanager
def _single_thread_deterministic() -> Iterator[None]:
    """Single-threaded, deterministic torch for the duration of a training run; the
    process's previous settings are restored afterwards."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.set_num_threads(threads)


def _check_data(
    arch: str, x: npt.NDArray[np.floating], y: npt.NDArray[np.integer]
) -> tuple[torch.Tensor, torch.Tensor]:
    spec = get_arch(arch)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or tuple(x.shape[1:]) != spec.input_shape:
        raise ValueError(
            f"{arch}: inputs have shape {x.shape}, expected (N, {', '.join(map(str, spec.input_shape))})"
        )
    if y.shape != (x.shape[0],):
        raise ValueError(f"{arch}: labels have shape {y.shape}, expected ({x.shape[0]},)")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise ValueError(f"{arch}: labels must be in 0..{spec.num_classes - 1}")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return xt, yt


def train_local(
    arch: str,
    global_weights: bytes,
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.integer],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> bytes:
    """Train from the global weights with plain SGD on cross-entropy for `epochs` passes
    over (x, y) in shuffled mini-batches (the last one may be short); returns the new
    weights' bytes. Deterministic given `seed`."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if not (lr > 0.0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive finite number, got {lr}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    xt, yt = _check_data(arch, x, y)
    n = len(yt)
    if n == 0:
        raise ValueError(f"{arch}: cannot train on an empty shard")
    model = model_from_bytes(arch, global_weights)
    bitgen = np.random.PCG64(np.random.SeedSequence(seed))
    with _single_thread_deterministic():
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(epochs):
            # argsort of raw 64-bit draws: a permutation stable across numpy versions.
            order = torch.from_numpy(np.argsort(bitgen.random_raw(n), kind="stable"))
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
    return model_to_bytes(model)


def _logits(model: nn.Module, xt: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(xt[i : i + _EVAL_CHUNK]) for i in range(0, len(xt), _EVAL_CHUNK)])


def evaluate_float(
    arch: str, weights: bytes, x: npt.NDArray[np.floating], y: npt.NDArray[np.integer]
) -> float:
    """Float accuracy, for reporting only (consensus uses the quantised evaluator).

    Like the circuit, an example counts as correct only if its label's logit is strictly
    greater than every other logit: ties are wrong.
    """
    xt, yt = _check_data(arch, x, y)
    if len(yt) == 0:
        raise ValueError(f"{arch}: cannot evaluate on no examples")
    logits = _logits(model_from_bytes(arch, weights), xt)
    label_logit = logits.gather(1, yt[:, None]).squeeze(1)
    others = logits.scatter(1, yt[:, None], float("-inf")).max(dim=1).values
    return float((label_logit > others).double().mean().item())
