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

import argparse
import json
import os
import platform
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


def measure(threads: int, full_naive_cases, cases=tuple(CASES)) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for case in cases:
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


def to_markdown(rows: list[dict]) -> str:
    runs = []
    for r in rows:
        if r.get("conditions") not in runs:
            runs.append(r.get("conditions"))
    lines = [
        "# Sampling on CPU: cached (native) vs naive",
        "",
        "Float32, random weights at the default widths (PixelCNN: 64 channels, 8 blocks; "
        "Gated PixelCNN: 64 channels, 6 layers, 3x3; 66 channels for RGB, which needs a "
        "multiple of 6), eval mode; best of 2 interleaved runs of each sampler (naive: a "
        "full run, or scaled from timed steps, see the column and the script's docstring). "
        "`cache` is the sampler's workspace plus its packed weights while it samples; it is "
        "freed when `sample` returns.",
        "",
        *(f"Run {i + 1}: " + ", ".join(f"{k}: {v}" for k, v in (c or {}).items()) + "."
          for i, c in enumerate(runs)),
        "",
        "| case | model | threads | images | cached s | images/s | naive s | naive timing "
        "| speedup | target | params MiB | cache MiB | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        target = f"{r['target']:.0f}x {'met' if r['speedup'] >= r['target'] else 'NOT met'}" if (
            r["target"]) else "-"  # fmt: skip
        lines.append(
            f"| {r['case']} | {r['model']} | {r['threads']} | {r['images']} "
            f"| {r['cached_s']:.3f} | {r['cached_images_per_s']:.1f} | {r['naive_s']:.2f} "
            f"| {r['naive_timing']} | {r['speedup']:.0f}x | {target} "
            f"| {r['parameter_bytes'] / 2**20:.2f} | {r['cache_bytes'] / 2**20:.2f} "
            f"| {runs.index(r.get('conditions')) + 1} |"
        )
    return "\n".join(lines) + "\n"


def render(path: Path) -> None:
    """Rewrites the .md of a results .json (python benchmarks/bench_sampling.py --render)."""
    path.with_suffix(".md").write_text(to_markdown(json.loads(path.read_text())["rows"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the .json")
    parser.add_argument(
        "--full-naive",
        default="8x8 digits",
        help="comma-separated cases whose naive sampler runs in full",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help="comma-separated cases to measure (others keep their stored rows)",
    )
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args()  # fmt: skip
    out = Path(__file__).parent / "results" / "cpu-sampling.json"
    if args.render:
        return render(out)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {unknown}, known: {list(CASES)}")
    threads = [int(t) for t in args.threads.split(",")]
    conditions = dict(
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        load_average_before=f"{os.getloadavg()[0]:.2f}",
        torch=torch.__version__,
        python=platform.python_version(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    full = set(args.full_naive.split(","))
    rows = [row for t in threads for row in measure(t, full, cases)]
    conditions["load_average_after"] = f"{os.getloadavg()[0]:.2f}"
    for row in rows:
        row["conditions"] = conditions
    if out.exists():  # keep the stored rows of what this run did not measure
        fresh = {(r["case"], r["model"], r["threads"]) for r in rows}
        kept = [r for r in json.loads(out.read_text())["rows"]
                if (r["case"], r["model"], r["threads"]) not in fresh]  # fmt: skip
        rows = sorted(kept + rows, key=lambda r: (r["threads"], list(CASES).index(r["case"])))
    out.write_text(json.dumps(dict(rows=rows), indent=1))
    out.with_suffix(".md").write_text(to_markdown(rows))
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
