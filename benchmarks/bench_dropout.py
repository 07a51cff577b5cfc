"""dropout against torch's F.dropout and torch.compile of it.

Providers: genmodels native, genmodels triton (GPU), F.dropout (eager: a Bernoulli mask
from torch's generator, stored for backward) and torch.compile of F.dropout. Modes:
forward, backward, full. `extra_info` has achieved GB/s on the minimal bytes (forward
reads x and writes out; backward reads grad_out and writes grad_x: the mask is regenerated,
never read) and its share of the copy bandwidth measured in the same run.

Sizes: a PixelCNN block's activation on the digits ([64, 32, 8, 8] channels_last, the
layout the masked convolutions return), a CIFAR-sized feature map, and a 4096 x 4096 matrix.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE, ON_GPU, copy_bandwidth, record, run_mode  # noqa: F401

from genmodels.ops import dropout

P = 0.5
SIZES = [
    ((64, 32, 8, 8), True),
    ((256, 64, 32, 32), True),
    ((256, 64, 32, 32), False),
    ((4096, 4096), False),
]
PROVIDERS = ["native", "eager", "compile"] + (["triton"] if ON_GPU else [])
MODES = ["forward", "backward", "full"]


def dropout_recipe(x):
    return F.dropout(x, P, training=True)


_compiled = torch.compile(dropout_recipe)


def _fn(provider):
    if provider in ("native", "triton"):
        return lambda x: (dropout(x, P, backend=provider),)
    recipe = dropout_recipe if provider == "eager" else _compiled
    return lambda x: (recipe(x),)


def _minimal_bytes(mode, numel, itemsize):
    one_way = 2 * numel * itemsize
    return {"forward": one_way, "backward": one_way, "full": 2 * one_way}[mode]


def _size_id(size):
    shape, channels_last = size
    return "x".join(map(str, shape)) + ("-cl" if channels_last else "")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", SIZES, ids=_size_id)
def test_dropout(benchmark, copy_bandwidth, size, provider, mode):  # noqa: F811
    shape, channels_last = size
    benchmark.group = f"dropout {_size_id(size)} {mode}"
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=DEVICE).to(memory_format=layout).requires_grad_()
    grad = torch.randn(shape, device=DEVICE).to(memory_format=layout)
    run_mode(benchmark, mode, _fn(provider), [x], (grad,))
    record(
        benchmark,
        bytes_moved=_minimal_bytes(mode, x.numel(), x.element_size()),
        copy_gbps=copy_bandwidth,
        op="dropout",
        provider=provider,
        mode=mode,
        size=_size_id(size),
        numel=x.numel(),
    )
