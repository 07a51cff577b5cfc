"""The training loop's thread count: fixed, or "auto" chosen by timing steps."""

import pytest
import torch

from genmodels.training import TrainConfig, train
from genmodels.training.threads import ThreadChooser, parse_threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


class FakeClock:
    """Each step takes `cost[threads]` seconds of this clock."""

    def __init__(self, cost):
        self.now, self.cost = 0.0, cost

    def __call__(self):
        return self.now

    def run(self, chooser, steps):
        used = []
        for _ in range(steps):
            with chooser.step() as n:
                assert torch.get_num_threads() == n
                used.append(n)
                self.now += self.cost[n]
        return used


def test_auto_probes_each_count_then_keeps_the_fastest(two_threads):
    clock = FakeClock({2: 0.200, 1: 0.014})  # the 2-core machine beside one busy core
    said = []
    chooser = ThreadChooser("auto", probe_steps=3, warmup=1, every=20, clock=clock,
                            report=said.append)  # fmt: skip
    assert chooser.candidates == [2, 1]
    used = clock.run(chooser, 20)
    assert used == [2] * 4 + [1] * 4 + [1] * 12
    assert said == ["threads: 1 (1: 14.0 ms/step, 2: 200.0 ms/step)"]
    # The next cycle measures again: the load has gone, two threads win again.
    clock.cost = {2: 0.050, 1: 0.090}
    used = clock.run(chooser, 20)
    assert used == [2] * 4 + [1] * 4 + [2] * 12
    assert said[-1] == "threads: 2 (1: 90.0 ms/step, 2: 50.0 ms/step)"
    chooser.restore()
    assert torch.get_num_threads() == 2


def test_auto_ignores_the_warmup_step_of_each_count(two_threads):
    class Clock(FakeClock):
        def run_costs(self, chooser, costs):
            for c in costs:
                with chooser.step():
                    self.now += c

    clock = Clock({})
    chooser = ThreadChooser("auto", probe_steps=2, warmup=1, every=100, clock=clock)
    # 2 threads: a slow first step (thread start-up), then fast ones; 1 thread: steady.
    clock.run_costs(chooser, [5.0, 0.01, 0.01, 0.02, 0.02, 0.02])
    assert chooser.chosen == 2


def test_fixed_and_single_counts_never_probe(two_threads):
    clock = FakeClock({1: 0.01, 2: 0.01, 3: 0.01})
    chooser = ThreadChooser(1, clock=clock)
    assert clock.run(chooser, 10) == [1] * 10
    chooser.restore()
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    chooser = ThreadChooser("auto", clock=clock)  # one thread only: nothing to choose
    assert chooser.candidates == [1] and not chooser.probing
    assert clock.run(chooser, 5) == [1] * 5


@pytest.mark.parametrize("bad", [0, -1, "0", "two", 1.5, True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be a positive int or 'auto'"):
        parse_threads(bad)
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(model="vae", threads=bad)


def test_parse_threads():
    assert parse_threads("3") == 3 and parse_threads(2) == 2
    assert parse_threads("auto") == "auto" and parse_threads(None) is None


def test_training_with_auto_threads_restores_the_count(tmp_path, two_threads):
    small = {"hidden_channels": 8, "latent_dim": 2}
    for name, threads in (("auto", "auto"), ("one", 1)):
        cfg = TrainConfig(model="vae", epochs=1, out=str(tmp_path / name), progress=False,
                          model_kwargs=small, threads=threads)  # fmt: skip
        assert train(cfg)["epochs"] == 1
        assert torch.get_num_threads() == 2
