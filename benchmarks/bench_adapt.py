"""One ADDA adversarial iteration (genmodels.adapt.adda.ADDATask.adapt_step): a discriminator
update on a source and a target batch, then a target-encoder update, as `genmodels adapt
adda` runs it. Variants:

  gan                 the default adversary (the paper's inverted-label GAN loss)
  wgan-gp auto        Wasserstein critic + gradient penalty, gradient_penalty(method="auto"):
                      the critic is a Linear/ReLU chain, so the exact first-order path
  wgan-gp autograd    the same penalty by double backward (the canonical recipe)

Sizes: the embedded pair (8x8, small encoder, 128 features) and the paper's digits
(28x28, LeNet, 500 features), batch 64 per domain. extra_info holds the step's peak memory
(on CPU the peak of live tensor bytes in a torch.profiler trace, as bench_gradient_penalty).

    pytest benchmarks/bench_adapt.py --benchmark-json=benchmarks/results/<name>.json
    python benchmarks/bench_adapt.py [ROUNDS]   # round-robin medians and peaks, a shared machine
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gradient_penalty import _profiled_peak  # noqa: E402
from conftest import DEVICE, synchronize  # noqa: E402

from genmodels.adapt.adda import ADDATask  # noqa: E402
from genmodels.data import ImageDataset, Splits  # noqa: E402

BATCH = 64
VARIANTS = {"gan": ("gan", "auto"), "wgan-gp auto": ("wgan-gp", "auto"),
            "wgan-gp autograd": ("wgan-gp", "autograd")}  # fmt: skip
SIZES = {8: 17, 28: 256}  # image size -> levels


def make_step(variant: str, size: int):
    adversary, method = VARIANTS[variant]
    levels = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, levels, (4 * BATCH, 1, size, size), generator=gen).to(torch.uint8)
    data = ImageDataset(images, torch.arange(4 * BATCH) % 10, levels, "bench")
    splits = Splits(data, data, data)
    task = ADDATask(splits, {"adversary": adversary}, target=splits)
    task.penalty_method = method
    torch.manual_seed(0)
    model = task.build_model().to(DEVICE)
    optimizers = task.optimizers(model, 1e-3)
    model.init_target_from_source()
    model.train()
    x_s = images[:BATCH].to(DEVICE).long()
    y_s = data.labels[:BATCH].to(DEVICE)
    x_t = images[BATCH : 2 * BATCH].to(DEVICE).long()

    def step():
        task.adapt_step(model, model, x_s, y_s, x_t, optimizers)
        synchronize()

    return step


def peak_memory(step) -> int:
    step()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    return _profiled_peak(prof)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", list(SIZES))
def test_adda_iteration(benchmark, size, variant):
    step = make_step(variant, size)
    step()
    benchmark.group = f"adda iteration {size}x{size} B={BATCH}"
    benchmark.pedantic(step, rounds=int(os.environ.get("GM_BENCH_ROUNDS", 20)), warmup_rounds=2)
    benchmark.extra_info.update(variant=variant, size=size, batch=BATCH)
    benchmark.extra_info["peak_memory_bytes"] = peak_memory(make_step(variant, size))


def interleaved(rounds: int) -> str:
    lines = [f"ADDA adversarial iteration, B={BATCH} per domain, {DEVICE}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}; median of {rounds} "
             "round-robin rounds"]  # fmt: skip
    for size in SIZES:
        steps = {v: make_step(v, size) for v in VARIANTS}
        times = {v: [] for v in VARIANTS}
        for step in steps.values():
            step()
        for _ in range(rounds):
            for v, step in steps.items():
                start = time.perf_counter()
                step()
                times[v].append(time.perf_counter() - start)
        base = statistics.median(times["wgan-gp autograd"])
        lines.append(f"\n{size}x{size}:")
        for v in VARIANTS:
            t = statistics.median(times[v])
            peak = peak_memory(make_step(v, size))
            lines.append(
                f"  {v:18s} {t * 1e3:8.2f} ms  x{base / t:5.2f} vs wgan-gp autograd"
                f"  peak {peak / 2**20:7.2f} MiB"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
