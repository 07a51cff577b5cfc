"""Sampling PixelCNN and Gated PixelCNN: the cached incremental sampler (`method="cached"`,
native kernels) against the naive one (`method="naive"`, the network re-run for every
sub-pixel), float32, random weights at the default widths, eval mode.

Cases (issue 14): 28x28 with 2 levels, 16 images; the 8x8 digits (17 levels), 64 images;
32x32 RGB with 256 levels, 16 images.

    pytest benchmarks/bench_sampling.py      # the cached sampler alone, pytest-benchmark
    python benchmarks/bench_sampling.py      # both samplers, 1 and 2 threads, writes
                                             # benchmarks/results/cpu-sampling.{md,json}

The script times the naive sampler in full at 8x8 only (pass a comma-separated list of
cases to time more in full). At 28x28 and 32x32 a full naive run takes minutes to an hour
on a busy 2-core machine, so there it is *scaled*: one naive step (the network on the
image cut below row i, all images) is timed at rows 1, 8, 16, ... and the last row, the
step time is interpolated linearly in the rows and summed over all H * W * C steps (the
draws are a negligible part of a step).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import pytest
import torch

from genmodels.models import GatedPixelCNN, PixelCNN
from genmodels.ops import pixelcnn_sampling

CASES = {
    "28x28 2 levels": dict(image_size=28, levels=2, in_channels=1, n=16),
    "8x8 digits": dict(image_size=8, levels=17, in_channels=1, n=64),
    # 64 channels do not split into 3 colour groups of gated pairs: the nearest width that does
    "32x32 RGB": dict(image_size=32, levels=256, in_channels=3, n=16, hidden_channels=66),
}
MODELS = {"PixelCNN": PixelCNN, "GatedPixelCNN": GatedPixelCNN}
REPEATS = 2
TARGETS = {"28x28 2 levels": 100.0, "8x8 digits": 10.0}


def make_model(name: str, case: str):
    spec = CASES[case]
    torch.manual_seed(0)
    kwargs = {k: v for k, v in spec.items() if k != "n"}
    model = MODELS[name](**kwargs)
    return model.eval(), spec["n"]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(MODELS))
def test_cached_sampler(benchmark, name, case):
    model, n = make_model(name, case)
    benchmark.pedantic(
        lambda: model.sample(n, generator=torch.Generator().manual_seed(0)), rounds=1
    )


def time_sampler(model, n: int, method: str) -> float:
    start = time.perf_counter()
    model.sample(n, generator=torch.Generator().manual_seed(0), method=method)
    return time.perf_counter() - start


@torch.no_grad()
def scaled_naive(model, n: int) -> float:
    """Seconds of the naive sampler from timed steps at a few row counts (module docstring)."""
    size, channels = model.image_size, model.in_channels
    x = torch.randint(0, model.levels, (n, channels, size, size))
    points = sorted({1, *range(8, size + 1, 8), size})
    step = {}
    for rows in points:
        model._net(x[:, :, :rows], None)  # warm-up
        start = time.perf_counter()
        for _ in range(3):
            model._logits(model._net(x[:, :, :rows], None))[:, :, 0, rows - 1, 0].float().softmax(1)
        step[rows] = (time.perf_counter() - start) / 3
    total = 0.0
    for r in range(1, size + 1):
        lo = max(p for p in points if p <= r)
        hi = min(p for p in points if p >= r)
        t = step[lo] if hi == lo else step[lo] + (step[hi] - step[lo]) * (r - lo) / (hi - lo)
        total += t * size * channels
    return total


def measure(threads: int, full_naive_cases) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for case in CASES:
        for name in MODELS:
            model, n = make_model(name, case)
            time_sampler(model, min(n, 4), "cached")  # warm-up
            full = case in full_naive_cases
            cached, naive = [], []
            for _ in range(REPEATS):  # interleaved: both see the same load on a shared machine
                cached.append(time_sampler(model, n, "cached"))
                naive.append(time_sampler(model, n, "naive") if full else scaled_naive(model, n))
            cached, naive = min(cached), min(naive)
            params = sum(p.nbytes for p in model.parameters())
            row = dict(
                case=case, model=name, threads=threads, images=n,
                cached_s=cached, cached_images_per_s=n / cached,
                naive_s=naive, naive_timing="full run" if full else "scaled from timed steps",
                speedup=naive / cached, target=TARGETS.get(case),
                parameter_bytes=params, cache_bytes=pixelcnn_sampling.cache_bytes(model, n),
            )  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def to_markdown(rows: list[dict], conditions: dict) -> str:
    lines = [
        "# Sampling on CPU: cached (native) vs naive",
        "",
        "Conditions: " + ", ".join(f"{k}: {v}" for k, v in conditions.items()) + ".",
        "Float32, random weights at the default widths (PixelCNN: 64 channels, 8 blocks; "
        "Gated PixelCNN: 64 channels, 6 layers, 3x3; 66 channels for RGB, which needs a "
        "multiple of 6), eval mode; best of 2 interleaved runs of each sampler (naive: a "
        "full run, or scaled from timed steps, see the column and the script's docstring). "
        "`cache` is the sampler's workspace plus its packed weights while it samples; it is "
        "freed when `sample` returns.",
        "",
        "| case | model | threads | images | cached s | images/s | naive s | naive timing "
        "| speedup | target | params MiB | cache MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        target = f"{r['target']:.0f}x {'met' if r['speedup'] >= r['target'] else 'NOT met'}" if (
            r["target"]) else "-"  # fmt: skip
        lines.append(
            f"| {r['case']} | {r['model']} | {r['threads']} | {r['images']} "
            f"| {r['cached_s']:.3f} | {r['cached_images_per_s']:.1f} | {r['naive_s']:.2f} "
            f"| {r['naive_timing']} | {r['speedup']:.0f}x | {target} "
            f"| {r['parameter_bytes'] / 2**20:.2f} | {r['cache_bytes'] / 2**20:.2f} |"
        )
    return "\n".join(lines) + "\n"


def render(path: Path) -> None:
    """Rewrites the .md of a results .json (python benchmarks/bench_sampling.py --render)."""
    data = json.loads(path.read_text())
    path.with_suffix(".md").write_text(to_markdown(data["rows"], data["conditions"]))


def main() -> None:
    if sys.argv[1:2] == ["--render"]:
        return render(Path(__file__).parent / "results" / "cpu-sampling.json")
    full = set(sys.argv[1].split(",")) if len(sys.argv) > 1 else {"8x8 digits"}
    conditions = dict(
        machine=f"{platform.processor() or platform.machine()}, 2 cores shared with other jobs",
        torch=torch.__version__,
        python=platform.python_version(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    rows = measure(1, full) + measure(2, full)
    out = Path(__file__).parent / "results"
    (out / "cpu-sampling.json").write_text(json.dumps(dict(conditions=conditions, rows=rows),
                                                      indent=1))  # fmt: skip
    (out / "cpu-sampling.md").write_text(to_markdown(rows, conditions))
    print(to_markdown(rows, conditions))


if __name__ == "__main__":
    main()
