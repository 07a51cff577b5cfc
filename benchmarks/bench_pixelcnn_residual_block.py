"""pixelcnn_residual_block (PixelCNN's residual block as one op) against the block as
pytorch-generative writes it.

Providers:
  native    genmodels native kernels: one C++ autograd node, the 1x1 convolutions as GEMMs
            over the pixel rows, masked_conv2d's kernel for the k x k, fused passes around
  triton    genmodels Triton kernels (GPU only)
  recipe    genmodels.recipes.pixelcnn_residual_block_recipe: each weight masked in place
            before plain convolutions (pytorch-generative's recipe), ReLUs, torch's dropout,
            the add: eight autograd nodes
  compile   torch.compile of the recipe
Modes: forward, backward (graph built outside the timing), full. p = 0.2 (the default
PixelCNN's dropout). Cases: the default PixelCNN's block on the digits' batches
([64, 64, 8, 8], 64 -> 32 -> 64) and on 28x28 images at B=16.

    pytest benchmarks/bench_pixelcnn_residual_block.py [--contention]
    python benchmarks/bench_pixelcnn_residual_block.py [--rounds N] [--threads 1,2] [--contention]
        # round-robin medians of every provider in one process, and each one's peak memory
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_gradient_penalty import _profiled_peak  # noqa: E402
from conftest import DEVICE, ON_GPU, run_mode, synchronize  # noqa: E402

from genmodels import _backend  # noqa: E402
from genmodels.ops import pixelcnn_residual_block  # noqa: E402
from genmodels.recipes import pixelcnn_residual_block_recipe  # noqa: E402

P = 0.2
# (batch, channels, size): hidden channels = channels / 2, 3x3 mask B in the middle.
CASES = [(64, 64, 8), (16, 64, 28)]
PROVIDERS = ["native", "triton", "recipe", "compile"]
MODES = ["forward", "backward", "full"]
_compiled = torch.compile(pixelcnn_residual_block_recipe)


def make_inputs(batch, channels, size, device=DEVICE):
    torch.manual_seed(0)
    hidden = channels // 2
    x = torch.randn(batch, channels, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    shapes = [(hidden, channels, 1, 1), (hidden,), (hidden, hidden, 3, 3), (hidden,),
              (channels, hidden, 1, 1), (channels,)]  # fmt: skip
    fan_in = [channels, 1, hidden * 9, 1, hidden, 1]
    ps = [(torch.randn(s, device=device) * f**-0.5 * 0.5).requires_grad_()
          for s, f in zip(shapes, fan_in, strict=True)]  # fmt: skip
    grad = torch.randn(batch, channels, size, size, device=device)
    return [x, *ps], [grad.contiguous(memory_format=torch.channels_last)]


def provider_fn(provider):
    if provider in ("native", "triton"):
        return lambda x, *ps: (pixelcnn_residual_block(x, *ps, p=P, backend=provider),)
    recipe = pixelcnn_residual_block_recipe if provider == "recipe" else _compiled
    return lambda x, *ps: (recipe(x, *ps, P),)


def _skip_reason(provider):
    if provider == "triton" and not ON_GPU:
        return "Triton is benchmarked on GPUs only"
    if provider == "native":
        ok, why = _backend.native_available(DEVICE.type)
        return None if ok else why
    return None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[0]}-c{c[1]}-{c[2]}x{c[2]}")
def test_pixelcnn_residual_block(benchmark, case, provider, mode):
    reason = _skip_reason(provider)
    if reason:
        pytest.skip(reason)
    inputs, grads = make_inputs(*case)
    benchmark.group = f"pixelcnn_residual_block b{case[0]} c{case[1]} {case[2]}x{case[2]} {mode}"
    run_mode(benchmark, mode, provider_fn(provider), inputs, grads)
    benchmark.extra_info.update(
        op="pixelcnn_residual_block",
        provider=provider,
        mode=mode,
        peak_memory_bytes=peak_memory(provider, case, mode),
    )


def _step(provider, inputs, grads, mode):
    fn = provider_fn(provider)

    def forward():
        with torch.no_grad():
            fn(*inputs)

    def full():
        for t in inputs:
            t.grad = None
        (out,) = fn(*inputs)
        out.backward(grads[0])
        synchronize()

    return forward if mode == "forward" else full


def peak_memory(provider, case, mode) -> int:
    """Peak bytes allocated by one call beyond what exists before it (CPU: live tensor
    bytes over a profiler trace; CUDA: max_memory_allocated)."""
    inputs, grads = make_inputs(*case)
    step = _step(provider, inputs, grads, mode)
    step()
    if ON_GPU:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return _profiled_peak(prof)


def interleaved(case, rounds, providers=("native", "recipe", "compile")):
    """{(provider, mode): median seconds}, every provider and mode timed in turn."""
    torch._dynamo.reset()  # a fresh compile per case and thread count (recompile limit)
    steps = {}
    for provider in providers:
        inputs, grads = make_inputs(*case)
        for mode in ("forward", "full"):
            steps[provider, mode] = _step(provider, inputs, grads, mode)
    times = {key: [] for key in steps}
    for i in range(rounds + 3):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= 3:  # warm-up and compilation
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def main(argv=None) -> None:
    import argparse
    import os
    from contextlib import nullcontext

    from contention import competing_load, load_average, requested

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--contention", action="store_true")
    args = parser.parse_args(argv)
    contended = args.contention or requested()
    providers = ("native", "recipe", "compile")
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, p={P}, load average before "
        f"{load_average()}, competing load on one core: {'yes' if contended else 'no'}"
    )
    print(
        "\n| block | threads | mode | native | in-place recipe | compile(recipe) | vs recipe "
        "| vs compile | peak MiB native / recipe / compile |\n|---|---:|---|" + "---:|" * 6
    )
    with competing_load() if contended else nullcontext():
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            for case in CASES:
                med = interleaved(case, args.rounds, providers)
                for mode in ("forward", "full"):
                    t = [med[p, mode] * 1e3 for p in providers]
                    mem = [peak_memory(p, case, mode) / 2**20 for p in providers]
                    print(
                        f"| [{case[0]}, {case[1]}, {case[2]}, {case[2]}] | {threads} | {mode} | "
                        + " | ".join(f"{v:.2f} ms" for v in t)
                        + f" | {t[1] / t[0]:.2f}x | {t[2] / t[0]:.2f}x | "
                        + " / ".join(f"{m:.1f}" for m in mem)
                        + " |",
                        flush=True,
                    )
    print(f"\nload average after {load_average()}")


if __name__ == "__main__":
    main()
