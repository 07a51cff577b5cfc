"""Benchmarks of the gradient penalty: the op against the recipe, and whole critic steps.

    pytest benchmarks/bench_gradient_penalty.py --benchmark-json=out.json
    python benchmarks/bench_gradient_penalty.py out.json      # ratios and bandwidth table
    python benchmarks/bench_gradient_penalty.py --interleaved 8 32 64   # critic steps, round-robin

(a) ``test_op``: ``genmodels.ops.gradient_penalty`` per backend against the recipe users
    write, ``((grads.view(B, -1).norm(2, dim=1) - 1) ** 2).mean()``, forward alone and
    forward + backward. extra_info holds the bytes the op must move, the achieved GB/s and
    the copy bandwidth measured on the same tensor (``dst.copy_(src)``).
(b) ``test_critic_step``: one WGAN-GP critic step of a DCGAN critic (B=64): critic loss on
    real and fake, the penalty, backward; the canonical eager recipe against each method,
    lazy regularization (every=4, amortized: use the mean) and a torch.compile-d critic with
    the first-order method. extra_info holds the step's peak memory: on CUDA
    torch.cuda.max_memory_allocated over the step, on CPU the peak of live tensor bytes
    in a torch.profiler trace with profile_memory=True (a separate, untimed step).

Sizes: GM_BENCH_SIZES=all runs every size of the issue (the default on CUDA); on CPU the
default is a subset that runs in a few minutes on 2 cores. GM_BENCH_COMPILE=1 adds the
compiled variants on CPU (they are always on for CUDA). GM_BENCH_ROUNDS sets the rounds
of a critic step (default 8 on CPU, 30 on CUDA; lazy regularization runs twice as many,
in whole cycles of 4).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from critics import DCGANCritic  # noqa: E402

from genmodels import _backend  # noqa: E402
from genmodels.gan import gradient_penalty  # noqa: E402
from genmodels.nn import GradientPenalty  # noqa: E402
from genmodels.ops import gradient_penalty as penalty_op  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ALL = os.environ.get("GM_BENCH_SIZES", "all" if DEVICE == "cuda" else "small") == "all"
COMPILE = DEVICE == "cuda" or os.environ.get("GM_BENCH_COMPILE") == "1"

OP_SIZES = [(64, 3, 32, 32), (64, 3, 64, 64), (256, 3, 64, 64), (256, 3, 128, 128)]
if not ALL:
    OP_SIZES = OP_SIZES[:3]
STEP_SIZES = [32, 64]


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def recipe(grads):
    return ((grads.view(grads.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()


def _op_impls():
    impls = {"recipe": recipe}
    if COMPILE:
        impls["recipe-compiled"] = torch.compile(recipe)
    for name in ("native", "triton"):
        ok, _ = (_backend.native_available if name == "native" else _backend.triton_available)(
            DEVICE
        )
        if ok and not (name == "triton" and DEVICE == "cpu"):  # the interpreter is no benchmark
            impls[name] = lambda g, name=name: penalty_op(g, backend=name)
    return impls


OP_IMPLS = _op_impls()


def copy_gbps(numel: int, dtype=torch.float32) -> float:
    """Copy bandwidth (bytes read + written per second) on a tensor of this size."""
    src = torch.randn(numel, device=DEVICE).to(dtype)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    _sync()
    reps, t0 = 0, time.perf_counter()
    while True:
        dst.copy_(src)
        reps += 1
        _sync()
        if time.perf_counter() - t0 > 0.3 and reps >= 5:
            break
    return 2 * src.numel() * src.element_size() * reps / (time.perf_counter() - t0) / 1e9


@pytest.mark.parametrize("direction", ["forward", "forward+backward"])
@pytest.mark.parametrize("impl", list(OP_IMPLS))
@pytest.mark.parametrize("shape", OP_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_op(benchmark, shape, impl, direction):
    torch.manual_seed(0)
    grads = torch.randn(shape, device=DEVICE) * 0.01
    fn = OP_IMPLS[impl]
    if direction == "forward":

        def run():
            with torch.no_grad():
                out = fn(grads)
            _sync()
            return out

        moved = grads.numel() * grads.element_size()  # read once
    else:
        leaf = grads.clone().requires_grad_(True)

        def run():
            (g,) = torch.autograd.grad(fn(leaf), leaf)
            _sync()
            return g

        moved = 3 * grads.numel() * grads.element_size()  # read, read, write
    run()
    benchmark.group = f"op {direction} {'x'.join(map(str, shape))}"
    benchmark.extra_info.update(impl=impl, direction=direction, shape=list(shape), bytes=moved)
    benchmark(run)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info["gbps"] = moved / seconds / 1e9
    benchmark.extra_info["copy_gbps"] = copy_gbps(grads.numel())
    benchmark.extra_info["fraction_of_copy"] = (
        benchmark.extra_info["gbps"] / benchmark.extra_info["copy_gbps"]
    )


# --- (b) the whole critic step -----------------------------------------------------------

STEP_VARIANTS = ["recipe", "autograd", "piecewise-linear", "finite-difference", "autograd-every4"]
if COMPILE:
    STEP_VARIANTS.append("finite-difference-compiled")


def make_step(variant: str, image_size: int, batch: int = 64):
    torch.manual_seed(0)
    D = DCGANCritic(image_size).to(DEVICE)
    real = torch.rand(batch, 3, image_size, image_size, device=DEVICE) * 2 - 1
    fake = torch.tanh(torch.randn(batch, 3, image_size, image_size, device=DEVICE))
    alpha = torch.rand(batch, device=DEVICE)
    lazy = GradientPenalty(every=4)
    critic = torch.compile(D) if variant.endswith("compiled") else D

    def step():
        D.zero_grad(set_to_none=True)
        if variant.startswith("finite-difference"):
            # first: its graph is consumed inside the call, before the loss graphs exist
            penalty = gradient_penalty(critic, real, fake, alpha=alpha, method="finite-difference")
            loss = penalty + critic(fake).mean() - critic(real).mean()
            loss.backward()
            _sync()
            return
        loss = critic(fake).mean() - critic(real).mean()
        if variant == "recipe":
            a = alpha.view(-1, 1, 1, 1)
            x = (a * real + (1 - a) * fake).requires_grad_(True)
            out = D(x)
            (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
            loss = loss + 10 * ((g.view(g.size(0), -1).norm(2, dim=1) - 1) ** 2).mean()
        elif variant == "autograd-every4":
            loss = loss + lazy(D, real, fake, alpha=alpha)
        else:
            loss = loss + gradient_penalty(D, real, fake, alpha=alpha, method=variant)
        loss.backward()
        _sync()

    return step


def _profiled_peak(prof) -> int:
    """Peak of the bytes allocated and not yet freed, over a CPU profile with
    profile_memory=True: ops carry their own net allocation, "[memory]" events the frees
    that happen outside ops; allocations count at an event's start, frees at its end."""
    events = []
    for e in prof.events():
        nbytes = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if nbytes:
            events.append((e.time_range.start if nbytes > 0 else e.time_range.end, nbytes))
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


def step_peak_memory(variant: str, image_size: int) -> int:
    """Peak memory one critic step allocates beyond what exists before it, in bytes
    (over 4 steps for lazy regularization, whose peak is the regularized step's)."""
    step = make_step(variant, image_size)
    step()  # compilation and first-call allocations are not the step's
    steps = 4 if variant.endswith("every4") else 1
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            step()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            step()
    return _profiled_peak(prof)


@pytest.mark.parametrize("variant", STEP_VARIANTS)
@pytest.mark.parametrize("image_size", STEP_SIZES)
def test_critic_step(benchmark, image_size, variant):
    warnings.simplefilter("ignore")  # the finite-difference warning on LeakyReLU critics
    step = make_step(variant, image_size)
    step()
    benchmark.group = f"critic step {image_size}x{image_size} B=64"
    rounds = int(os.environ.get("GM_BENCH_ROUNDS", 8 if DEVICE == "cpu" else 30))
    if variant.endswith("every4"):  # whole cycles of 4, so the mean is the amortized cost
        rounds = 4 * -(-rounds // 4) * 2
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1 if DEVICE == "cpu" else 5)
    benchmark.extra_info.update(variant=variant, image_size=image_size, batch=64)
    benchmark.extra_info["peak_memory_bytes"] = step_peak_memory(variant, image_size)


# --- summary ------------------------------------------------------------------------------


def summarize(path: str) -> str:
    """Markdown-ish tables of ratios from a --benchmark-json file."""
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        rows.setdefault(b["group"], {})[e.get("impl") or e["variant"]] = b
    lines = []
    for group, impls in sorted(rows.items()):
        if group.startswith("op"):
            base = impls["recipe"]["stats"]["median"]
            lines.append(f"\n{group} (median; speedup over the recipe; GB/s; fraction of copy)")
            for name, b in impls.items():
                e, t = b["extra_info"], b["stats"]["median"]
                lines.append(
                    f"  {name:16s} {t * 1e3:9.3f} ms  x{base / t:5.2f}  {e['gbps']:8.1f} GB/s"
                    f"  {e['fraction_of_copy']:5.2f} of copy ({e['copy_gbps']:.0f} GB/s)"
                )
        else:
            base = impls["recipe"]
            base_mem = max(base["extra_info"]["peak_memory_bytes"], 1)
            lines.append(f"\n{group} (mean; speedup and peak memory against the recipe)")
            for name, b in impls.items():
                mem, t = b["extra_info"]["peak_memory_bytes"], b["stats"]["mean"]
                lines.append(
                    f"  {name:27s} {t * 1e3:9.1f} ms  x{base['stats']['mean'] / t:5.2f}"
                    f"  peak {mem / 2**20:8.1f} MiB ({mem / base_mem:5.2f} of recipe)"
                )
    return "\n".join(lines)


def interleaved(image_size: int, rounds: int) -> str:
    """Critic-step times with the variants run round-robin, so that a shared machine's
    changing load hits every variant alike (lazy regularization: whole cycles of 4)."""
    warnings.simplefilter("ignore")
    steps = {v: make_step(v, image_size) for v in STEP_VARIANTS}
    times = {v: [] for v in STEP_VARIANTS}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for v, step in steps.items():
            reps = 4 if v.endswith("every4") else 1
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            times[v].append((time.perf_counter() - t0) / reps)
    base = sorted(times["recipe"])[rounds // 2]
    lines = [f"critic step {image_size}x{image_size} B=64, {rounds} interleaved rounds, {DEVICE}"]
    for v, ts in times.items():
        med, best = sorted(ts)[rounds // 2], min(ts)
        lines.append(
            f"  {v:27s} median {med * 1e3:8.1f} ms (x{base / med:4.2f})"
            f"  min {best * 1e3:8.1f} ms (x{min(times['recipe']) / best:4.2f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--interleaved":
        for size in sys.argv[3:] or ["32", "64"]:
            print(interleaved(int(size), int(sys.argv[2])), flush=True)
    else:
        print(summarize(sys.argv[1]))
