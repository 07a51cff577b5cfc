"""masked_conv2d against the recipes PixelCNN users write today.

Providers:
  native    genmodels native kernels (CPU: oneDNN convolutions over the kept-tap rectangles;
            CUDA: active-tap im2col + cuBLAS GEMM)
  triton    genmodels Triton implicit GEMM (GPU only)
  recipe    F.conv2d(x, weight * mask): a dense convolution, half of whose taps are zero
  shifted   PixelCNN++'s shifted convolutions: a down-shifted (rows above) and a
            down-right-shifted (current row, left) convolution, summed: no wasted taps
  compile   torch.compile of the recipe
Modes: forward, backward (graph built outside the timing), full (forward + backward).
`extra_info["tflops"]` counts only the active taps (2 * N * H * W * active MACs per pixel;
backward counts 2x forward), for every provider, so TFLOP/s are comparable as useful work.

Run everything on a GPU machine:
    pytest benchmarks/bench_masked_conv2d.py \
        --benchmark-json=benchmarks/results/masked_conv2d_gpu.json
The CPU subset (the issue's CPU targets and a few more; a few minutes on 2 cores):
    pytest benchmarks/bench_masked_conv2d.py -k cpu
"""

from __future__ import annotations

import pytest
import torch

from genmodels import _backend
from genmodels.nn import GatedPixelCNNLayer
from genmodels.ops import make_mask, masked_conv2d
from genmodels.recipes import masked_conv2d_recipe, shifted_conv2d

ON_GPU = torch.cuda.is_available()
MODES = ["forward", "backward", "full"]


# --- the baselines ------------------------------------------------------------------------


recipe = masked_conv2d_recipe
shifted = shifted_conv2d

_compiled_recipe = torch.compile(recipe)


# --- cases --------------------------------------------------------------------------------

# (kind, k, mask_type, c_in, c_out, image size, batch, colour groups)
CPU_CASES = [
    ("hidden", 7, "B", 64, 64, 28, 16, 1),  # issue target: >= 1.5x the recipe, full pass
    ("hidden", 3, "B", 64, 64, 28, 16, 1),  # issue target: >= 1.2x the recipe, full pass
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
    if provider in ("shifted", "compile") and kind == "gated":
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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["native", "triton", "recipe", "shifted", "compile"])
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
    scale = (c_in * k * k) ** -0.5
    x = torch.randn(batch, c_in, hw, hw, **opts).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(kind != "input")  # the image needs no gradient
    c = k // 2
    if kind == "gated":
        layer, macs = _gated(c_in, k, opts, provider)
        inputs = [x, *layer.parameters()]
        fn = lambda: layer(x, x)[1]  # noqa: E731
    else:
        w = (torch.randn(c_out, c_in, k, k, **opts) * scale).requires_grad_(True)
        b = torch.zeros(c_out, **opts).requires_grad_(True)
        inputs = [x, w, b]
        mask = make_mask(c_out, c_in, k, mask_type, groups, dtype=dtype, device=device)
        macs = int(make_mask(c_out, c_in, k, mask_type, groups).sum().item())
        if provider in ("native", "triton"):
            kw = dict(mask_type=mask_type, color_groups=groups, backend=provider)
            fn = lambda: masked_conv2d(x, w, b, **kw)  # noqa: E731
        elif provider == "recipe":
            fn = lambda: recipe(x, w, b, mask)  # noqa: E731
        elif provider == "compile":
            fn = lambda: _compiled_recipe(x, w, b, mask)  # noqa: E731
        else:  # the two no-waste convolutions, with the mask's number of taps
            width = c + (1 if mask_type == "B" else 0)
            w_above = (torch.randn(c_out, c_in, c, k, **opts) * scale).requires_grad_(True)
            w_row = (torch.randn(c_out, c_in, 1, width, **opts) * scale).requires_grad_(True)
            inputs = [x, w_above, w_row, b]
            fn = lambda: shifted(x, w_above, w_row, b)  # noqa: E731
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
