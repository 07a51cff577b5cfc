"""torch's intra-op thread count during training: a fixed number, or "auto", which times
the training steps with each candidate count and keeps the fastest.

Why "auto": while another process keeps one core busy, every OpenMP parallel region waits
for the thread whose core that process holds, and the small layers of the digits' models
then run many times slower with all threads than with one
(benchmarks/results/cpu-issue15-pixelcnn.md). Which count wins changes with the other
load, so "auto" measures again every `every` steps. Thread counts may round differently
(a reduction split another way), so a run with "auto" is not bitwise reproducible; a
fixed count is.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch

AUTO = "auto"


def parse_threads(value: object, name: str = "threads") -> int | str | None:
    """None (torch's default), a positive int, or "auto"; a numeric string becomes an int."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or 'auto', got {value!r}")
    return value


class ThreadChooser:
    """Sets torch's thread count around each training step (`with chooser.step(): ...`).

    With "auto", every cycle of `every` steps starts by running `warmup + probe_steps`
    steps with each candidate count (all threads, then one), keeps the one whose median
    probe step was fastest, and uses it for the rest of the cycle. With a fixed count or a
    single candidate it only sets that count. `restore()` puts back the count it found.
    """

    def __init__(
        self,
        threads: int | str | None,
        *,
        probe_steps: int = 3,
        warmup: int = 1,
        every: int = 200,
        clock: Callable[[], float] = time.perf_counter,
        report: Callable[[str], None] | None = None,
    ):
        threads = parse_threads(threads)
        self.initial = torch.get_num_threads()
        if threads == AUTO:
            self.candidates = sorted({self.initial, 1}, reverse=True)
        else:
            self.candidates = [threads if threads is not None else self.initial]
        self.probe_window = warmup + probe_steps
        self.warmup = warmup
        self.every = max(every, self.probe_window * len(self.candidates) + 1)
        self.clock, self.report = clock, report
        self.chosen = self.candidates[0]
        self._cycle_step = 0
        self._probe_times: dict[int, list[float]] = {}
        self._set(self.chosen)

    @property
    def probing(self) -> bool:
        return len(self.candidates) > 1 and self._cycle_step < self._probe_end

    @property
    def _probe_end(self) -> int:
        return self.probe_window * len(self.candidates)

    def _set(self, n: int) -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def _next_count(self) -> int:
        if self.probing:
            return self.candidates[self._cycle_step // self.probe_window]
        return self.chosen

    @contextlib.contextmanager
    def step(self) -> Iterator[int]:
        """Runs one training step with the count this schedule gives it (yielded)."""
        n = self._next_count()
        self._set(n)
        start = self.clock()
        yield n
        elapsed = self.clock() - start
        if self.probing and self._cycle_step % self.probe_window >= self.warmup:
            self._probe_times.setdefault(n, []).append(elapsed)
        self._cycle_step += 1
        if len(self.candidates) > 1 and self._cycle_step == self._probe_end:
            self._decide()
        if self._cycle_step >= self.every:
            self._cycle_step = 0
            self._probe_times = {}

    def _decide(self) -> None:
        medians = {n: statistics.median(t) for n, t in self._probe_times.items()}
        best = min(medians, key=lambda n: (medians[n], -n))
        if best != self.chosen and self.report is not None:
            said = ", ".join(f"{n}: {1e3 * t:.1f} ms/step" for n, t in sorted(medians.items()))
            self.report(f"threads: {best} ({said})")
        self.chosen = best
        self._set(best)

    def restore(self) -> None:
        self._set(self.initial)
