"""Shared pieces of the pytest-benchmark suites.

Run: pytest benchmarks/ --benchmark-json=benchmarks/results/<name>.json, then
python benchmarks/report.py benchmarks/results/<name>.json for the summary table.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # contention.py, plain_models.py

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"


def synchronize() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def timed(fn):
    """fn followed by a device synchronization, so wall time covers the kernels."""

    def run(*args):
        out = fn(*args)
        synchronize()
        return out

    return run


def best_time(fn, repeat: int = 10) -> float:
    fn()
    synchronize()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.fixture(scope="session")
def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), measured now."""
    n = (256 if ON_GPU else 64) * 2**20 // 4
    src = torch.rand(n, device=DEVICE)
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), repeat=20)
    return 2 * src.numel() * src.element_size() / seconds / 1e9


def record(benchmark, *, bytes_moved: int, copy_gbps: float, **info) -> None:
    """Puts achieved bandwidth (on the minimal bytes) and its share of copy into extra_info."""
    seconds = benchmark.stats.stats.min
    gbps = bytes_moved / seconds / 1e9
    benchmark.extra_info.update(
        info,
        bytes=bytes_moved,
        gbps=round(gbps, 2),
        copy_gbps=round(copy_gbps, 2),
        fraction_of_copy=round(gbps / copy_gbps, 3),
    )


def run_mode(benchmark, mode: str, forward, inputs, grads):
    """Benchmarks forward, backward (graph built outside the timing) or full."""
    forward, inputs = timed(forward), list(inputs)

    def make_graph():
        for t in inputs:
            t.grad = None
        outputs = forward(*inputs)
        return (outputs, grads), {}

    def backward(outputs, grads_):
        torch.autograd.backward(list(outputs), list(grads_))
        synchronize()

    def full():
        outputs, _ = make_graph()[0]
        backward(outputs, grads)

    if mode == "forward":
        with torch.no_grad():
            benchmark(forward, *inputs)
    elif mode == "backward":
        benchmark.pedantic(backward, setup=make_graph, rounds=20, warmup_rounds=2)
    else:
        benchmark(full)


def pytest_addoption(parser):
    parser.addoption(
        "--contention",
        action="store_true",
        help="run every benchmark beside a busy process pinned to one core "
        "(benchmarks/contention.py; also GENMODELS_BENCH_CONTENTION=1)",
    )


@pytest.fixture(scope="session", autouse=True)
def _competing_load(request):
    """The --contention mode: one busy core for the whole session, always stopped."""
    from contention import competing_load, requested

    if not (request.config.getoption("--contention") or requested()):
        yield None
        return
    with competing_load() as proc:
        yield proc


def pytest_benchmark_update_machine_info(config, machine_info):
    import importlib.util

    machine_info["torch"] = torch.__version__
    machine_info["cuda"] = torch.version.cuda
    machine_info["device"] = torch.cuda.get_device_name() if ON_GPU else platform.processor()
    machine_info["threads"] = torch.get_num_threads()
    machine_info["load_average"] = os.getloadavg()
    machine_info["contention"] = bool(config.getoption("--contention")) or os.environ.get(
        "GENMODELS_BENCH_CONTENTION", ""
    ) not in ("", "0")
    if importlib.util.find_spec("triton"):
        import triton

        machine_info["triton"] = triton.__version__
