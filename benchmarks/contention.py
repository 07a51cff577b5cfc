"""A competing CPU load for the benchmarks: one busy process pinned to one core.

Speed on a shared machine is measured, not guessed: `competing_load()` starts a process
that spins a busy loop on one core (the last one, or `core=`) for at most `max_seconds`,
and stops it when the block exits, also on an error or a KeyboardInterrupt. The loop
checks the clock and its parent, so a load whose benchmark was killed ends by itself.

    with competing_load():
        ...  # timings here run beside one busy core

The suites turn it on with `pytest benchmarks/... --contention` or
`GENMODELS_BENCH_CONTENTION=1` (benchmarks/conftest.py), the scripts with `--contention`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time

ENV = "GENMODELS_BENCH_CONTENTION"


def _spin(core: int | None, max_seconds: float, parent: int) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    end = time.monotonic() + max_seconds
    x = 0
    # A killed benchmark cannot stop its load: the load stops when its parent is gone.
    while time.monotonic() < end and os.getppid() == parent:
        for _ in range(10_000):
            x += 1


def requested() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


@contextlib.contextmanager
def competing_load(core: int | None = None, max_seconds: float = 3600.0):
    """Runs the block beside a busy loop on one core (the last core by default)."""
    if core is None and hasattr(os, "sched_getaffinity"):
        core = max(os.sched_getaffinity(0))
    # "spawn": the child must not inherit the parent's torch threads and locks.
    proc = multiprocessing.get_context("spawn").Process(
        target=_spin,
        args=(core, max_seconds, os.getpid()),
        daemon=True,
        name="genmodels-competing-load",
    )
    proc.start()
    try:
        time.sleep(0.2)  # let it start spinning before the first timing
        yield proc
    finally:
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
