"""masked_conv2d against the recipes PixelCNN users write today.

Providers:
  native    genmodels native kernels (CPU: oneDNN convolutions over the kept-tap rectangles;
            CUDA: active-tap im2col + cuBLAS GEMM)
  triton    genmodels Triton implicit GEMM (GPU only)
  recipe    the in-place recipe, the baseline every ratio is stated against:
            `with torch.no_grad(): weight.mul_(mask)` then `F.conv2d(x, weight)`, as
            pytorch-generative does (one dense convolution, no extra autograd node)
  product   F.conv2d(x, weight * mask): a dense convolution of a masked copy of the
            weight (one more autograd node; genmodels' baseline before issue 15)
  shifted   PixelCNN++'s shifted convolutions: a down-shifted (rows above) and a
            down-right-shifted (current row, left) convolution, summed: no wasted taps
  compile   torch.compile of the in-place recipe
Modes: forward, backward (graph built outside the timing), full (forward + backward).
`extra_info["tflops"]` counts only the active taps (2 * N * H * W * active MACs per pixel;
backward counts 2x forward), for every provider, so TFLOP/s are comparable as useful work.

Run everything on a GPU machine:
    pytest benchmarks/bench_masked_conv2d.py \
        --benchmark-json=benchmarks/results/masked_conv2d_gpu.json
The CPU subset (the issue's CPU targets and a few more; a few minutes on 2 cores):
    pytest benchmarks/bench_masked_conv2d.py -k cpu
Beside a competing load (one busy process pinned to one core, benchmarks/contention.py):
    pytest benchmarks/bench_masked_conv2d.py -k cpu --contention
Round-robin timings in one process (the ratios to trust on a shared machine), quiet and
under the competing load, 1 and 2 threads:
    python benchmarks/bench_masked_conv2d.py [--rounds N] [--threads 1,2] [--contention]
"""

from __future__ import annotations

import pytest
import torch

from genmodels import _backend
from genmodels.nn import GatedPixelCNNLayer
from genmodels.ops import make_mask, masked_conv2d
from genmodels.recipes import (
    masked_conv2d_inplace_recipe,
    masked_conv2d_recipe,
    shifted_conv2d,
)

ON_GPU = torch.cuda.is_available()
MODES = ["forward", "backward", "full"]


# --- the baselines ------------------------------------------------------------------------


recipe = masked_conv2d_inplace_recipe
product = masked_conv2d_recipe
shifted = shifted_conv2d

_compiled_recipe = torch.compile(recipe)
PROVIDERS = ["native", "triton", "recipe", "product", "shifted", "compile"]


# --- cases --------------------------------------------------------------------------------

# (kind, k, mask_type, c_in, c_out, image size, batch, colour groups)
CPU_CASES = [
    ("hidden", 7, "B", 64, 64, 28, 16, 1),  # issue 15: >= 1.5x the in-place recipe, full
    ("hidden", 3, "B", 64, 64, 28, 16, 1),  # issue 15: >= 1.3x the in-place recipe, full
    ("hidden", 3, "B", 32, 32, 8, 64, 1),  # the digits' PixelCNN block (issue 15: reported)
    ("input", 7, "A", 1, 64, 28, 16, 1),
    ("input", 7, "A", 3, 96, 28, 16, 3),
    ("hidden", 3, "B", 128, 128, 8, 64, 1),
    ("gated", 3, "B", 64, 64, 28, 16, 1),
]
GPU_CASES = [
    case
    for hw, b in ((8, 128), (28, 64), (32, 64))
    for case in [
        ("input", 7, "A", 1, 128, hw, b, 1),
        ("input", 7, "A", 3, 192, hw, b, 3),
        *[("hidden", k, "B", c, c, hw, b, 1) for c in (64, 128, 256) for k in (3, 7)],
        ("gated", 3, "B", 128, 128, hw, b, 1),
    ]
] + [("hidden", k, "B", 256, 256, 32, b, 1) for k in (3, 7) for b in (16, 128)]


def _cases():
    params = []
    for case in CPU_CASES:
        params.append(pytest.param((*case, "cpu", torch.float32), id=_id("cpu", case, "fp32")))
    no_gpu = [] if ON_GPU else [pytest.mark.skip(reason="GPU case, no CUDA device")]
    for case in GPU_CASES:
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "tf32")):
            params.append(
                pytest.param((*case, "cuda", dtype), id=_id("gpu", case, name), marks=no_gpu)
            )
    return params


def _id(device, case, dtype):
    kind, k, m, ci, co, hw, b, _ = case
    return f"{device}-{kind}-k{k}{m}-{ci}to{co}-{hw}x{hw}-b{b}-{dtype}"


def _skip_reason(provider, kind, k, mode, groups, device):
    if provider == "triton" and device != "cuda":
        return "Triton is benchmarked on GPUs only"
    if provider in ("shifted", "compile", "product") and kind == "gated":
        return "the gated layer is compared with its recipe (the reference backend) only"
    if provider == "shifted" and groups != 1:
        return "shifted convolutions have no colour groups"
    if device == "cpu" and provider == "compile" and (kind != "hidden" or mode != "full"):
        return "torch.compile on CPU: the hidden layers' full pass only (compile time)"
    if provider == "native":
        ok, why = _backend.native_available(device)
        return None if ok else why
    return None


def _run(benchmark, mode, fn, inputs, device):
    """Forward, backward (graph built outside the timing) or full, synchronized."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        out = fn()
        sync()
        return out

    if mode == "forward":
        with torch.no_grad():
            benchmark(forward)
        return
    grad = torch.randn_like(forward())

    def setup():
        for t in inputs:
            t.grad = None
        return (fn(),), {}

    def backward(out):
        out.backward(grad)
        sync()

    if mode == "backward":
        benchmark.pedantic(backward, setup=setup, rounds=15, warmup_rounds=2)
    else:
        benchmark(lambda: backward(fn()))


def _gated(c, k, opts, provider):
    backend = "reference" if provider == "recipe" else provider
    layer = GatedPixelCNNLayer(c, c, k, backend=backend).to(**opts)
    # VB (k * (k//2 + 1) taps) and HB (k//2 + 1 taps), C -> 2C; 1x1s: 2C -> 2C, 2x C -> C
    macs = (k + 1) * (k // 2 + 1) * c * 2 * c + 4 * c * c + 2 * c * c
    return layer, macs


def _conv_fn(provider, x, c_out, k, mask_type, groups, opts):
    """(the provider's forward closure, the tensors it differentiates, active MACs/pixel)."""
    c_in, c = x.shape[1], k // 2
    scale = (c_in * k * k) ** -0.5
    w = (torch.randn(c_out, c_in, k, k, **opts) * scale).requires_grad_(True)
    b = torch.zeros(c_out, **opts).requires_grad_(True)
    inputs = [x, w, b]
    mask = make_mask(c_out, c_in, k, mask_type, groups, **opts)
    macs = int(make_mask(c_out, c_in, k, mask_type, groups).sum().item())
    if provider in ("native", "triton"):
        kw = dict(mask_type=mask_type, color_groups=groups, backend=provider)
        fn = lambda: masked_conv2d(x, w, b, **kw)  # noqa: E731
    elif provider in ("recipe", "product", "compile"):
        impl = {"recipe": recipe, "product": product, "compile": _compiled_recipe}[provider]
        fn = lambda: impl(x, w, b, mask)  # noqa: E731
    else:  # the two no-waste convolutions, with the mask's number of taps
        width = c + (1 if mask_type == "B" else 0)
        w_above = (torch.randn(c_out, c_in, c, k, **opts) * scale).requires_grad_(True)
        w_row = (torch.randn(c_out, c_in, 1, width, **opts) * scale).requires_grad_(True)
        inputs = [x, w_above, w_row, b]
        fn = lambda: shifted(x, w_above, w_row, b)  # noqa: E731
    return fn, inputs, macs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", _cases())
def test_masked_conv2d(benchmark, case, provider, mode):
    kind, k, mask_type, c_in, c_out, hw, batch, groups, device, dtype = case
    reason = _skip_reason(provider, kind, k, mode, groups, device)
    if reason:
        pytest.skip(reason)
    if device == "cuda" and dtype == torch.float32:  # "tf32" cases: TF32 for every provider
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    benchmark.group = (
        f"masked_conv2d {kind} k{k}{mask_type} {c_in}->{c_out} {hw}x{hw} b{batch} {mode}"
    )
    opts = dict(device=device, dtype=dtype)
    x = torch.randn(batch, c_in, hw, hw, **opts).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(kind != "input")  # the image needs no gradient
    if kind == "gated":
        layer, macs = _gated(c_in, k, opts, provider)
        inputs = [x, *layer.parameters()]
        fn = lambda: layer(x, x)[1]  # noqa: E731
    else:
        fn, inputs, macs = _conv_fn(provider, x, c_out, k, mask_type, groups, opts)
    _run(benchmark, mode, fn, inputs, device)
    passes = {"forward": 1, "backward": 2, "full": 3}[mode]
    if not x.requires_grad and mode != "forward":
        passes -= 1  # no input gradient for the image
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update(
        op="masked_conv2d",
        kind=kind,
        provider=provider,
        mode=mode,
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        active_macs_per_pixel=macs,
        tflops=round(2 * batch * hw * hw * macs * passes / seconds / 1e12, 4),
        ms=round(seconds * 1e3, 3),
    )


# --- round-robin timings in one process ---------------------------------------------------

INTERLEAVED_CASES = [case for case in CPU_CASES if case[0] == "hidden"]
INTERLEAVED_PROVIDERS = ["native", "recipe", "product", "compile"]


def interleaved(case, threads: int, rounds: int, providers=INTERLEAVED_PROVIDERS):
    """{(provider, mode): median seconds}, every provider timed in turn each round."""
    import statistics
    import time

    kind, k, mask_type, c_in, c_out, hw, batch, groups = case
    torch.set_num_threads(threads)
    torch._dynamo.reset()  # a fresh compile per case and thread count (recompile limit)
    torch.manual_seed(0)
    opts = dict(device="cpu", dtype=torch.float32)
    x = torch.randn(batch, c_in, hw, hw).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = torch.randn(batch, c_out, hw, hw)
    steps = {}
    for provider in providers:
        fn, inputs, _ = _conv_fn(provider, x, c_out, k, mask_type, groups, opts)

        def forward(fn=fn):
            with torch.no_grad():
                fn()

        def full(fn=fn, inputs=inputs):
            for t in inputs:
                t.grad = None
            fn().backward(grad)

        steps[provider, "forward"], steps[provider, "full"] = forward, full
    times = {key: [] for key in steps}
    for i in range(rounds + 3):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= 3:  # warm-up (and compilation) rounds
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def main(argv=None) -> None:
    import argparse
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from contextlib import nullcontext

    from contention import competing_load, load_average, requested

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--contention", action="store_true", help="beside one busy core")
    args = parser.parse_args(argv)
    contended = args.contention or requested()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before "
        f"{load_average()}, competing load on one core: {'yes' if contended else 'no'}"
    )
    print(
        "\n| case | threads | mode | native | in-place recipe | weight*mask | compile(in-place) "
        "| vs in-place | vs weight*mask | vs compile |\n|---|---:|---|" + "---:|" * 7
    )
    with competing_load() if contended else nullcontext():
        for case in INTERLEAVED_CASES:
            _, k, m, c_in, c_out, hw, batch, _ = case
            for threads in map(int, args.threads.split(",")):
                med = interleaved(case, threads, args.rounds)
                for mode in ("forward", "full"):
                    t = {p: med[p, mode] * 1e3 for p in INTERLEAVED_PROVIDERS}
                    cells = [f"{t[p]:.2f} ms" for p in INTERLEAVED_PROVIDERS]
                    cells += [f"{t[p] / t['native']:.2f}x" for p in INTERLEAVED_PROVIDERS[1:]]
                    head = f"| k{k}{m} [{batch}, {c_in}, {hw}, {hw}] | {threads} | {mode} | "
                    print(head + " | ".join(cells) + " |", flush=True)
    print(f"\nload average after {load_average()}")


if __name__ == "__main__":
    main()
