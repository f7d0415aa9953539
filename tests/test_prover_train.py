"""Architectures, the weight format and local training (prover.models, prover.train)."""

from __future__ import annotations

import math
import pickle
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from torch import nn

from prover.data import load_dataset, split
from prover.models import (
    ALLOWED_LAYERS,
    ARCHITECTURES,
    FORMAT,
    ModelError,
    ModelFormatError,
    build_model,
    model_from_bytes,
    model_to_bytes,
    param_shapes,
)
from prover.train import evaluate_float, fresh_seed, train_local


@pytest.fixture(scope="module")
def digits_split() -> Any:
    ds = load_dataset("digits")
    return split(ds, seed=3, eval_batch_size=16, num_eval_batches=20, test_fraction=0.2)


def _bytes(arch: str, seed: int = 0) -> bytes:
    return model_to_bytes(build_model(arch, seed))


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_gives_logits_from_allowed_layers(arch: str) -> None:
    spec = ARCHITECTURES[arch]
    assert spec.name == arch
    model = build_model(arch, 0)
    assert all(isinstance(m, ALLOWED_LAYERS) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d | nn.Dropout | nn.Softmax) for m in model.modules())
    x = torch.rand(3, *spec.input_shape)
    assert model(x).shape == (3, spec.num_classes)
    assert [k for k, _ in param_shapes(arch)] == list(model.state_dict())


def test_digits_mlp_is_the_small_circuit_model() -> None:
    assert param_shapes("digits-mlp") == (
        ("0.weight", (16, 64)),
        ("0.bias", (16,)),
        ("2.weight", (10, 16)),
        ("2.bias", (10,)),
    )
    assert param_shapes("digits-mlp-tiny") == (("0.weight", (10, 64)), ("0.bias", (10,)))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_initialisation_is_seeded_bounded_and_free_of_exact_zeros(arch: str) -> None:
    torch_state, np_state = torch.get_rng_state(), pickle.dumps(np.random.get_state())
    a, b, c = build_model(arch, 11), build_model(arch, 11), build_model(arch, 12)
    assert torch.equal(torch.get_rng_state(), torch_state)  # the global RNGs are untouched
    assert pickle.dumps(np.random.get_state()) == np_state
    assert model_to_bytes(a) == model_to_bytes(b) != model_to_bytes(c)
    for module in a.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            bound = 1 / math.sqrt(module.weight[0].numel())
            for param in (module.weight, module.bias):
                assert param is not None
                p = param.detach()
                assert bool((p != 0).all())
                assert float(p.abs().max()) < bound
                assert float(p.abs().max()) > 0.8 * bound


def test_seeds_use_all_64_bits() -> None:
    # torch's own CPU generator keeps only 32 bits of a seed; ours must not.
    assert _bytes("digits-mlp-tiny", 1) != _bytes("digits-mlp-tiny", 1 + 2**32)
    assert _bytes("digits-mlp-tiny", 2**64 - 1)
    with pytest.raises(ModelError, match="seed"):
        build_model("digits-mlp-tiny", 2**64)


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="unknown architecture 'resnet50'; known: cifar-cnn"):
        build_model("resnet50", 0)
    with pytest.raises(ModelError, match="unknown architecture"):
        model_from_bytes("resnet50", b"")


# --------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_model_bytes_round_trip_exactly(arch: str) -> None:
    model = build_model(arch, 5)
    data = model_to_bytes(model)
    again = model_from_bytes(arch, data)
    assert model_to_bytes(again) == data
    for (k1, v1), (k2, v2) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(4, *ARCHITECTURES[arch].input_shape)
    assert torch.equal(model(x), again(x))


def test_model_bytes_are_the_documented_msgpack_layout() -> None:
    model = build_model("digits-mlp-tiny", 0)
    fmt, tensors = msgpack.unpackb(model_to_bytes(model), raw=False)
    assert fmt == FORMAT
    assert [(n, tuple(s)) for n, s, _ in tensors] == list(param_shapes("digits-mlp-tiny"))
    w = np.frombuffer(tensors[0][2], dtype="<f4").reshape(10, 64)
    np.testing.assert_array_equal(w, model.state_dict()["0.weight"].numpy())


def _repack(arch: str, edit: Any) -> bytes:
    """Re-encode an architecture's weights after `edit(tensors)` changed them in place."""
    fmt, tensors = msgpack.unpackb(_bytes(arch), raw=False)
    fmt = edit(tensors) or fmt
    out: bytes = msgpack.packb([fmt, tensors], use_bin_type=True)
    return out


def _nan(tensors: list[Any]) -> None:
    tensors[1][2] = np.float32("nan").astype("<f4").tobytes() + tensors[1][2][4:]


def _inf(tensors: list[Any]) -> None:
    tensors[0][2] = tensors[0][2][:-4] + np.float32("-inf").astype("<f4").tobytes()


MALFORMED: dict[str, tuple[Any, str]] = {
    "renamed tensor": (lambda t: t[0].__setitem__(0, "0.weighx"), "is '0.weighx', expected"),
    "swapped shape": (lambda t: t[0].__setitem__(1, [64, 10]), r"shape \[64, 10\]"),
    "swapped tensors": (lambda t: t.reverse(), "tensor #0 is '0.bias'"),
    "wrong magic": (lambda t: "zkpot-model/2", "not a zkpot-model/1 encoding"),
    "nan weight": (_nan, "non-finite"),
    "inf weight": (_inf, "non-finite"),
    "bias as text": (lambda t: t[1].__setitem__(2, "x" * 40), "wrong byte length"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_weights_of_the_right_length_are_rejected(case: str) -> None:
    edit, message = MALFORMED[case]
    data = _repack("digits-mlp-tiny", edit)
    assert len(data) == len(_bytes("digits-mlp-tiny"))  # only the strict checks catch it
    with pytest.raises(ModelFormatError, match=message):
        model_from_bytes("digits-mlp-tiny", data)


def test_wrong_length_oversized_and_mismatched_bytes_are_rejected() -> None:
    good = _bytes("digits-mlp")
    for data in (b"", good[:-1], good + b"\x00", good * 2, b"\x00" * 10_000_000):
        with pytest.raises(ModelFormatError, match=r"bytes, expected exactly \d+"):
            model_from_bytes("digits-mlp", data)
    with pytest.raises(ModelFormatError, match="expected exactly"):
        model_from_bytes("digits-mlp-tiny", good)  # another architecture's weights
    with pytest.raises(ModelFormatError, match=r"not a msgpack weight encoding|not a zkpot"):
        model_from_bytes("digits-mlp", b"\xc1" * len(good))
    extra = _repack("digits-mlp-tiny", lambda t: t.append(["0.extra", [1], b"\0\0\0\0"]))
    with pytest.raises(ModelFormatError):
        model_from_bytes("digits-mlp-tiny", extra)


def test_a_non_finite_model_cannot_be_encoded() -> None:
    model = build_model("digits-mlp-tiny", 0)
    with torch.no_grad():
        model.state_dict()["0.bias"][3] = float("nan")
    with pytest.raises(ModelFormatError, match="non-finite"):
        model_to_bytes(model)


def test_every_single_byte_change_is_rejected_cleanly_or_decodes_canonically() -> None:
    good = _bytes("digits-mlp-tiny")
    assert len(good) == 2644
    rejected = 0
    for pos in range(len(good)):
        for value in {0x00, 0x41, 0xFF, good[pos] ^ 0x01} - {good[pos]}:
            data = bytearray(good)
            data[pos] = value
            try:
                model = model_from_bytes("digits-mlp-tiny", bytes(data))
            except ModelFormatError:
                rejected += 1
                continue
            # Only a change inside a weight's bytes decodes, and it re-encodes identically.
            assert model_to_bytes(model) == bytes(data)
    assert rejected > 500  # the structure, and the NaN/inf patterns in the weights


# --------------------------------------------------------------------------- training


def test_training_improves_digits_accuracy_by_a_clear_margin(digits_split: Any) -> None:
    s = digits_split
    initial = _bytes("digits-mlp", 0)
    trained = train_local(
        "digits-mlp", initial, s.pool_x, s.pool_y, epochs=8, batch_size=32, lr=0.1, seed=42
    )
    before = evaluate_float("digits-mlp", initial, s.test_x, s.test_y)
    after = evaluate_float("digits-mlp", trained, s.test_x, s.test_y)
    assert before < 0.3
    assert after > 0.8
    assert after - before > 0.5


@pytest.mark.parametrize("arch", ["digits-mlp-tiny", "digits-cnn"])
def test_other_digits_architectures_learn_too(arch: str, digits_split: Any) -> None:
    s = digits_split
    initial = _bytes(arch, 1)
    trained = train_local(
        arch, initial, s.pool_x, s.pool_y, epochs=5, batch_size=32, lr=0.1, seed=1
    )
    assert evaluate_float(arch, trained, s.test_x, s.test_y) > 0.8


def test_training_is_deterministic_given_the_seed(digits_split: Any) -> None:
    s = digits_split
    w = _bytes("digits-mlp", 0)
    x, y = s.pool_x[:300], s.pool_y[:300]

    def run(seed: int) -> bytes:
        return train_local("digits-mlp", w, x, y, epochs=2, batch_size=16, lr=0.05, seed=seed)

    torch_state = torch.get_rng_state()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    a, b, c = run(7), run(7), run(8)
    assert a == b != c != w
    assert run(7 + 2**32) != a  # every seed bit matters
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_training_with_a_short_last_batch_and_one_example(digits_split: Any) -> None:
    s = digits_split
    w = _bytes("digits-cnn", 0)
    out = train_local(
        "digits-cnn", w, s.pool_x[:1], s.pool_y[:1], epochs=1, batch_size=32, lr=0.1, seed=0
    )
    assert out != w and len(out) == len(w)


def test_training_rejects_bad_inputs(digits_split: Any) -> None:
    s = digits_split
    w = _bytes("digits-mlp", 0)
    x, y = s.pool_x[:10], s.pool_y[:10]
    kw: dict[str, Any] = {"epochs": 1, "batch_size": 4, "lr": 0.1, "seed": 0}
    with pytest.raises(ValueError, match=r"inputs have shape \(10, 8, 8\), expected \(N, 64\)"):
        train_local("digits-mlp", w, x.reshape(10, 8, 8), y, **kw)
    with pytest.raises(ValueError, match="labels have shape"):
        train_local("digits-mlp", w, x, y[:5], **kw)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        train_local("digits-mlp", w, x, y + 10, **kw)
    with pytest.raises(ValueError, match="empty shard"):
        train_local("digits-mlp", w, x[:0], y[:0], **kw)
    with pytest.raises(ValueError, match="learning rate"):
        train_local("digits-mlp", w, x, y, **{**kw, "lr": float("nan")})
    with pytest.raises(ValueError, match="epochs and batch_size"):
        train_local("digits-mlp", w, x, y, **{**kw, "epochs": 0})
    with pytest.raises(ValueError, match="seed"):
        train_local("digits-mlp", w, x, y, **{**kw, "seed": -1})
    with pytest.raises(ModelFormatError):
        train_local("digits-mlp", _bytes("digits-mlp-tiny"), x, y, **kw)


def test_evaluation_counts_ties_as_wrong(digits_split: Any) -> None:
    s = digits_split
    zero = build_model("digits-mlp-tiny", 0)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    # All logits equal: argmax would score every label-0 example; the strict rule scores 0.
    assert evaluate_float("digits-mlp-tiny", model_to_bytes(zero), s.test_x, s.test_y) == 0.0


def test_fresh_seeds_are_64_bit_and_distinct() -> None:
    seeds = {fresh_seed() for _ in range(64)}
    assert len(seeds) == 64
    assert all(0 <= v < 2**64 for v in seeds)
