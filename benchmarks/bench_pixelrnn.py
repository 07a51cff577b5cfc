"""row_lstm and diagonal_lstm against the Python loops users write (genmodels.recipes) and
torch.compile of them; the PixelRNN training step against its plain twin; cached sampling
against re-running the network for every sub-pixel.

Ops: forward, backward and full (forward + backward) at [64, 4x64, 8, 8] (a digits batch)
and [16, 4x64, 28, 28] (MNIST-sized), float32. Providers: genmodels native (and triton on
GPU), the recipe in eager mode, torch.compile of the recipe.
Models: one training step (forward, cross-entropy, backward, Adam) of PixelRNN(kind) with
the defaults on the digits' [64, 1, 8, 8], against plain_twin (the same weights with the
recipe loops, `weight * mask` convolutions and nn.Dropout).
Sampling: 16 images of 28x28 from PixelRNN(kind, image_size=28), "cached" against "naive".

`python benchmarks/bench_pixelrnn.py` prints the same comparisons as ratios measured
interleaved in one process (rounds alternate between providers), the figures that
benchmarks/results/cpu-pixelrnn.md quotes.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import DEVICE, ON_GPU, run_mode, synchronize  # noqa: E402
from plain_models import plain_twin  # noqa: E402

from genmodels import recipes  # noqa: E402
from genmodels.models import PixelRNN  # noqa: E402
from genmodels.ops import diagonal_lstm, row_lstm  # noqa: E402

OPS = ["row_lstm", "diagonal_lstm"]
SIZES = [(64, 64, 8, 8), (16, 64, 28, 28)]  # [B, C, H, W]: gates_x has 4C channels
PROVIDERS = ["native", "recipe", "compile"] + (["triton"] if ON_GPU else [])
MODES = ["forward", "backward", "full"]


def _recipe(op):
    if op == "row_lstm":
        return recipes.row_lstm_recipe
    return lambda gx, w, b: recipes.diagonal_lstm_recipe(gx, w, b, False)


_COMPILED = {op: torch.compile(_recipe(op)) for op in OPS}


def op_fn(op, provider):
    if provider in ("native", "triton"):
        fused = row_lstm if op == "row_lstm" else diagonal_lstm
        return lambda gx, w, b: (fused(gx, w, b, backend=provider),)
    recipe = _recipe(op) if provider == "recipe" else _COMPILED[op]
    return lambda gx, w, b: (recipe(gx, w, b),)


def op_inputs(op, size):
    torch.manual_seed(0)
    b, c, h, w = size
    k = 3 if op == "row_lstm" else 2
    gates_x = torch.randn(b, 4 * c, h, w, device=DEVICE, requires_grad=True)
    weight = (torch.randn(4 * c, c, k, device=DEVICE) / (c * k) ** 0.5).requires_grad_()
    bias = torch.zeros(4 * c, device=DEVICE, requires_grad=True)
    grad = torch.randn(b, c, h, w, device=DEVICE)
    return [gates_x, weight, bias], (grad,)


def _size_id(size):
    b, c, h, w = size
    return f"{b}x4x{c}x{h}x{w}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", SIZES, ids=_size_id)
@pytest.mark.parametrize("op", OPS)
def test_op(benchmark, op, size, provider, mode):
    benchmark.group = f"{op} {_size_id(size)} {mode}"
    inputs, grads = op_inputs(op, size)
    run_mode(benchmark, mode, op_fn(op, provider), inputs, grads)
    benchmark.extra_info.update(op=op, provider=provider, mode=mode, size=_size_id(size))


# --- models -------------------------------------------------------------------------------

KINDS = ["row", "diagonal"]


def training_step(kind, provider, batch=64, size=8):
    torch.manual_seed(0)
    model = PixelRNN(kind, image_size=size).to(DEVICE)
    if provider == "plain":
        model = plain_twin(model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 17, (batch, 1, size, size), device=DEVICE)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), x)
        loss.backward()
        opt.step()
        synchronize()

    return step


@pytest.mark.parametrize("provider", ["genmodels", "plain"])
@pytest.mark.parametrize("kind", KINDS)
def test_training_step(benchmark, kind, provider):
    benchmark.group = f"PixelRNN {kind} training step 64x1x8x8"
    step = training_step(kind, provider)
    step()
    benchmark(step)
    benchmark.extra_info.update(model=kind, provider=provider)


def sampler(kind, method, n=16, size=28):
    torch.manual_seed(0)
    model = PixelRNN(kind, image_size=size).to(DEVICE).eval()

    def draw():
        model.sample(n, generator=torch.Generator(DEVICE).manual_seed(0), method=method)
        synchronize()

    return draw


@pytest.mark.parametrize("method", ["cached", "naive"])
@pytest.mark.parametrize("kind", KINDS)
def test_sampling(benchmark, kind, method):
    benchmark.group = f"PixelRNN {kind} sample 16 x 28x28"
    benchmark.pedantic(sampler(kind, method), rounds=1, iterations=1)
    benchmark.extra_info.update(model=kind, method=method)


# --- interleaved ratios (python benchmarks/bench_pixelrnn.py) -----------------------------


def _full_step(fn, inputs, grads):
    def run():
        for t in inputs:
            t.grad = None
        torch.autograd.backward(list(fn(*inputs)), list(grads))
        synchronize()

    return run


def interleaved(runs: dict, rounds: int, warmup: bool = True) -> dict:
    """Best time of each callable, rounds alternating between them (after a warm-up)."""
    for run in runs.values() if warmup else ():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    print(f"torch {torch.__version__}, {DEVICE}, {torch.get_num_threads()} threads")
    print("\nops, forward + backward, float32 (best of interleaved rounds, ms):")
    for op in OPS:
        for size in SIZES:
            inputs, grads = op_inputs(op, size)
            runs = {p: _full_step(op_fn(op, p), inputs, grads) for p in PROVIDERS}
            best = interleaved(runs, rounds=10 if size[2] <= 8 else 4)
            ms = "  ".join(f"{p} {t * 1e3:.2f}" for p, t in best.items())
            print(
                f"{op:<14} {_size_id(size):<14} {ms}  native vs recipe "
                f"{best['recipe'] / best['native']:.2f}x, vs compile "
                f"{best['compile'] / best['native']:.2f}x"
            )
    print("\ntraining step, PixelRNN defaults on [64, 1, 8, 8] (ms):")
    for kind in KINDS:
        best = interleaved({p: training_step(kind, p) for p in ("genmodels", "plain")}, 10)
        print(
            f"{kind:<9} genmodels {best['genmodels'] * 1e3:.1f}  plain {best['plain'] * 1e3:.1f}"
            f"  speedup {best['plain'] / best['genmodels']:.2f}x"
        )
    print("\nsampling 16 images of 28x28 (s):")
    for kind in KINDS:
        best = interleaved({m: sampler(kind, m) for m in ("cached", "naive")}, 1, False)
        print(
            f"{kind:<9} cached {best['cached']:.2f}  naive {best['naive']:.2f}"
            f"  speedup {best['naive'] / best['cached']:.1f}x"
        )


if __name__ == "__main__":
    main()
