"""The heavy work behind `prover.client`'s jobs; runs only inside a worker process.

Each function takes plain values (bytes, ints, strs) and returns plain values or
`prover.client`'s small result types, so the node's event loop never touches
torch or ezkl objects. The node imports `prover.client`, never this module.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from consensus import bn254
from consensus.types import EvalBatch
from prover import aggregation, circuit, trainfile
from prover.client import Built, Proved, Verified
from prover.data import load_dataset
from prover.models import build_model, get_arch, model_from_bytes, model_to_bytes
from prover.quant import (
    FixedPoint,
    IntArray,
    QuantError,
    accuracy_count,
    check_layers,
    logits,
    quantise_inputs,
    quantise_params,
)
from prover.train import evaluate_float, train_local


def _provable(net: nn.Module) -> None:
    """Refuse, before ezkl sees it, any layer the exact evaluator cannot mirror bit for bit
    (prover.quant.check_layers: Linear, Conv2d with groups 1 and dilation 1, ReLU,
    Flatten, Reshape)."""
    check_layers(net)


def make_eval_batch(
    index: int, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], input_scale: int
) -> EvalBatch:
    """The publisher's wire form of a held-out batch: int32 LE inputs at the circuit's scale, uint8 labels."""
    xq = quantise_inputs(np.asarray(x).reshape(len(x), -1), input_scale)
    return EvalBatch(index, xq.astype("<i4").tobytes(), np.asarray(y).astype(np.uint8).tobytes())


def decode_batch(batch: EvalBatch, input_dim: int) -> tuple[IntArray, np.ndarray[Any, Any]]:
    xq = np.frombuffer(batch.inputs, dtype="<i4").astype(np.int64)
    labels = np.frombuffer(batch.labels, dtype=np.uint8).astype(np.int64)
    if xq.size != len(labels) * input_dim:
        raise QuantError(f"batch holds {xq.size} inputs, expected {len(labels)} x {input_dim}")
    return xq.reshape(len(labels), input_dim), labels


def build_circuit(
    arch: str,
    batch_size: int,
    out: str,
    seed: int,
    logrows: int,
    srs: str | None,
    grow: bool = False,
) -> Built:
    net = build_model(arch, seed)
    _provable(net)
    fp = FixedPoint()
    q = quantise_params(list(net.parameters()), fp.param_scale)
    spec = get_arch(arch)
    # A dry run of the evaluator refuses what it cannot mirror (e.g. a Conv2d fed flat
    # inputs) before the export does, with a QuantError that says why.
    dry, _ = logits(net, q, np.zeros((1, math.prod(spec.input_shape)), dtype=np.int64), fp)
    if dry.shape[1] != spec.num_classes:
        raise QuantError(f"{arch} outputs {dry.shape[1]} logits for {spec.num_classes} classes")
    manifest, test = circuit.build(
        arch,
        net,
        q,
        batch_size=batch_size,
        input_dim=math.prod(spec.input_shape),  # eval batches travel flattened
        num_classes=spec.num_classes,
        out=Path(out),
        fp=fp,
        logrows=logrows,
        srs=Path(srs) if srs else None,
        grow=grow,
    )
    return Built(dataclasses.asdict(manifest), model_to_bytes(net), test.prove_ms, test.verify_ms)


def commit(artifacts: str, arch: str, weights: bytes) -> bytes:
    """C of a model. With one committed column, by the formula C(q) = sum q_j B_j + K over
    ezkl's own kzg_commit (prover.aggregation; tests/test_aggregation.py checks it equals
    the witness's commitment): 5-10x faster than compiling the model for a witness,
    which stays the way for circuits that commit several columns."""
    directory = Path(artifacts)
    manifest = circuit.Manifest.load(directory)
    net = model_from_bytes(arch, weights)
    _provable(net)
    q = quantise_params(list(net.parameters()), manifest.param_scale)
    if manifest.commitment_points == 1:
        values = [int(x) for t in q for x in t.ravel()]
        return bn254.compress(aggregation.commit_vector(artifacts, arch, values))
    return circuit.commit(directory, net, q)


def prove(artifacts: str, arch: str, weights: bytes, batch: bytes) -> Proved:
    directory = Path(artifacts)
    manifest = circuit.Manifest.load(directory)
    net = model_from_bytes(arch, weights)
    _provable(net)
    q = quantise_params(list(net.parameters()), manifest.param_scale)
    xq, labels = decode_batch(EvalBatch.decode(batch), manifest.input_dim)
    k, proof = circuit.prove(directory, net, q, xq, labels)
    return Proved(k, proof)


def verify(artifacts: str, proof: bytes, batch: bytes, commitment: bytes, k: int) -> Verified:
    directory = Path(artifacts)
    manifest = circuit.Manifest.load(directory)
    xq, labels = decode_batch(EvalBatch.decode(batch), manifest.input_dim)
    ok, reason = circuit.verify(directory, proof, xq, labels, commitment, k)
    return Verified(ok, reason)


def evaluate(artifacts: str, arch: str, weights: bytes, batch: bytes) -> int:
    """The plain quantised re-evaluation nodes use to re-check a proposer's claimed k."""
    manifest = circuit.Manifest.load(Path(artifacts))
    net = model_from_bytes(arch, weights)
    _provable(net)
    fp = manifest.fixed_point
    q = quantise_params(list(net.parameters()), fp.param_scale)
    xq, labels = decode_batch(EvalBatch.decode(batch), manifest.input_dim)
    out, scale = logits(net, q, xq, fp)
    return accuracy_count(out, scale, labels, fp)


@cache
def _training_data(arch: str, data_file: str, stamp: tuple[int, int]) -> tuple[Any, Any]:
    """The file's (x, y), loaded once per version of the file (`stamp`: mtime, size)."""
    spec = get_arch(arch)
    return trainfile.load(Path(data_file), spec.input_shape, spec.num_classes)


def _load(arch: str, data_file: str) -> tuple[Any, Any]:
    try:
        st = Path(data_file).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:  # trainfile.load says what is wrong with it
        stamp = (0, 0)
    return _training_data(arch, data_file, stamp)


def train(
    arch: str,
    global_weights: bytes,
    data_file: str,
    epochs: int,
    batch_size: int,
    learning_rate_ppm: int,
    seed: int,
) -> bytes:
    """Local training on this participant's own data file."""
    x, y = _load(arch, data_file)
    trained: bytes = train_local(
        arch,
        global_weights,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        lr=learning_rate_ppm / 1e6,
        seed=seed,
    )
    return trained


def regenerate_pk(artifacts: str) -> None:
    circuit.regenerate_pk(Path(artifacts))


def warm(arch: str, data_file: str | None) -> None:
    """Touch what the first real job would load: torch's kernels, the training data."""
    net = build_model("digits-mlp-tiny", 0)
    net(torch.zeros(1, math.prod(get_arch("digits-mlp-tiny").input_shape)))
    if data_file is not None:
        _load(arch, data_file)


@cache
def _test_split(dataset: str, test_index: str, stamp: tuple[int, int]) -> tuple[Any, Any]:
    ds = load_dataset(dataset)
    idx = np.frombuffer(Path(test_index).read_bytes(), dtype="<i8")
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(ds.y):
        raise ValueError(f"{test_index}: indices outside the {dataset} dataset")
    return ds.x[idx].reshape(len(idx), -1), ds.y[idx]


def test_accuracy_ppm(arch: str, dataset: str, test_index: str, weights: bytes) -> int:
    st = Path(test_index).stat()
    x, y = _test_split(dataset, test_index, (st.st_mtime_ns, st.st_size))
    return round(evaluate_float(arch, weights, x, y) * 1_000_000)
