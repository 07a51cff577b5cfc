"""'One op, one column' (DESIGN.md), enforced: every op in genmodels.ops.__all__ has its
plain-PyTorch recipe, a `genmodels bench` case, a test file and a benchmark file."""

import inspect
from pathlib import Path

import pytest
import torch

from genmodels import _bench, ops, recipes

ROOT = Path(__file__).parents[1]
# An op is a public function of genmodels.ops that takes backend=; the rest are helpers.
OPS = sorted(
    name for name in ops.__all__ if "backend" in inspect.signature(getattr(ops, name)).parameters
)


def _column(name: str) -> str:
    """The op's column: the module that defines it (gate lives in masked_conv2d's)."""
    return getattr(ops, name).__module__.rsplit(".", 1)[1]


def test_the_ops_are_found():
    assert {"masked_conv2d", "reparameterize_kl", "gradient_penalty", "dropout"} <= set(OPS)
    assert "make_mask" not in OPS


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_its_column(name):
    column = _column(name)
    missing = []
    if not callable(getattr(recipes, f"{name}_recipe", None)):
        missing.append(f"genmodels.recipes.{name}_recipe")
    cases = {make(torch.device("cpu")).op.split()[0] for make in _bench.CASES}
    if name not in cases:
        missing.append(f"a case in genmodels._bench.CASES whose op is {name!r}")
    if not (ROOT / f"tests/test_{column}.py").is_file():
        missing.append(f"tests/test_{column}.py")
    # benchmarks/bench_X.py, or a suite that benchmarks a family of ops (bench_pixelrnn.py).
    benches = [p for p in (ROOT / "benchmarks").glob("bench_*.py") if name in p.read_text()]
    if not (ROOT / f"benchmarks/bench_{column}.py").is_file() and not benches:
        missing.append(f"benchmarks/bench_{column}.py")
    assert not missing, f"{name} lacks: {', '.join(missing)}"


def test_genmodels_bench_covers_every_op():
    """The speed table `genmodels bench` prints has a row per op and provider."""
    results = _bench.speed_table(torch.device("cpu"), repeat=1, compile=False)
    assert {r["op"].split()[0] for r in results} == set(OPS)
    for r in results:
        assert r["provider"] in ("genmodels", "recipe")
        assert r["ms"] > 0 and r["speedup_vs_recipe"] > 0
