"""The exact evaluator on convolutional nets, without ezkl: bit-exact against torch's own
float64 forward pass on dyadic values (exactly representable), and clear refusals of
every layer option it does not mirror."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prover import jobs
from prover.models import Reshape, build_model
from prover.quant import FixedPoint, QuantError, check_layers, conv2d, logits, quantise_params

FP = FixedPoint()


@pytest.mark.parametrize(
    ("stride", "padding", "kernel"),
    [
        ((1, 1), (0, 0), (3, 3)),
        ((2, 2), (1, 1), (3, 3)),
        ((2, 3), (2, 0), (3, 2)),
        ((4, 1), (0, 3), (1, 4)),
    ],
)
def test_conv2d_is_torchs_on_integers(
    stride: tuple[int, int], padding: tuple[int, int], kernel: tuple[int, int]
) -> None:
    rng = np.random.default_rng(sum(stride) + sum(padding))
    x = rng.integers(-(2**20), 2**20, size=(3, 2, 9, 11))
    w = rng.integers(-(2**20), 2**20, size=(4, 2, *kernel))
    b = rng.integers(-(2**30), 2**30, size=4)
    got = conv2d(x, w, b, stride, padding)
    want = torch.nn.functional.conv2d(
        *(torch.tensor(v, dtype=torch.float64) for v in (x, w, b)), stride=stride, padding=padding
    )
    assert got.dtype == np.int64
    assert np.array_equal(got, want.numpy().astype(np.int64))  # |values| < 2^53: exact


def _padded_net() -> nn.Module:
    # conv -> conv with no ReLU between, asymmetric stride and padding, Flatten before ReLU
    return nn.Sequential(
        Reshape(2, 7, 6),
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=(1, 3), padding=1),
        nn.Flatten(),
        nn.ReLU(),
        nn.Linear(48, 5),
    )


NETS = {
    "digits-cnn": (lambda: build_model("digits-cnn", 1), 64),
    "mnist-cnn": (lambda: build_model("mnist-cnn", 1), 784),
    "digits-mlp": (lambda: build_model("digits-mlp", 1), 64),
    "padded": (_padded_net, 84),
}


@pytest.mark.parametrize("name", list(NETS))
def test_logits_are_the_float_forward_pass_scaled(name: str) -> None:
    """q/2^7 and xq/2^7 are exact in float64, so the float net computes logits/2^scale exactly."""
    make, dim = NETS[name]
    net = make().double()
    rng = np.random.default_rng(5)
    q = [rng.integers(-120, 120, size=tuple(p.shape)) for p in net.parameters()]
    with torch.no_grad():
        for p, v in zip(net.parameters(), q, strict=True):
            p.copy_(torch.from_numpy(v / 128.0))
    xq = rng.integers(0, 129, size=(5, dim))
    out, scale = logits(net, q, xq, FP)
    with torch.no_grad():
        want = net(torch.from_numpy(xq / 128.0)).numpy() * 2.0**scale
    n_linear = sum(isinstance(m, nn.Linear | nn.Conv2d) for m in net.modules())
    assert scale == FP.input_scale + n_linear * FP.param_scale
    assert np.array_equal(out, want.astype(np.int64)) and np.all(want == np.round(want))


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (nn.Conv2d(1, 2, 3, groups=1, dilation=2), "dilation"),
        (nn.Conv2d(2, 2, 3, groups=2), "groups"),
        (nn.Conv2d(1, 2, 3, padding="same"), "padding"),
        (nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), "padding"),
        (nn.Conv2d(1, 2, 3, bias=False), "bias"),
        (nn.Linear(4, 2, bias=False), "bias"),
        (nn.Flatten(2), "Flatten"),
        (nn.MaxPool2d(2), "MaxPool2d is not supported"),
        (nn.Conv3d(1, 1, 1), "Conv3d is not supported"),
    ],
)
def test_unsupported_layer_options_are_refused(layer: nn.Module, match: str) -> None:
    net = nn.Sequential(Reshape(1, 8, 8), layer)
    with pytest.raises(QuantError, match=match):
        check_layers(net)
    with pytest.raises(QuantError, match=match):
        jobs._provable(net)


@pytest.mark.slow  # builds a circuit
def test_a_conv_fed_flat_inputs_is_refused_before_ezkl(tmp_path: Path) -> None:
    """cifar-cnn's first layer is a Conv2d, but eval batches travel flattened."""
    with pytest.raises(QuantError, match="Reshape"):
        jobs.build_circuit("cifar-cnn", 2, str(tmp_path), 0, 13, None)
    assert not any(tmp_path.iterdir())


def test_parameters_that_do_not_fit_the_layers_are_refused() -> None:
    net = build_model("digits-cnn", 0)
    q = quantise_params(list(net.parameters()), FP.param_scale)
    xq = np.zeros((2, 64), dtype=np.int64)
    with pytest.raises(QuantError, match="do not fit"):
        logits(net, [q[0].reshape(8, 9), *q[1:]], xq, FP)
    with pytest.raises(QuantError, match="more parameters"):
        logits(net, [*q, q[-1]], xq, FP)
    with pytest.raises(QuantError, match="reshape"):
        logits(net, q, np.zeros((2, 63), dtype=np.int64), FP)


def test_sums_int64_could_wrap_are_refused_not_wrapped() -> None:
    net = nn.Sequential(Reshape(1, 4, 4), nn.Conv2d(1, 1, 4), nn.Flatten())
    q = [np.full((1, 1, 4, 4), 2**31, dtype=np.int64), np.ones(1, dtype=np.int64)]
    big = FixedPoint(decomp_base=2**16, decomp_legs=4)  # a range wide enough to get there
    with pytest.raises(QuantError, match="int64"):
        logits(net, q, np.full((1, 16), 2**28, dtype=np.int64), big)
