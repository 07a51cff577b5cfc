"""grad_reverse against the gradient-reversal layer users write today and torch.compile of it.

Providers: genmodels (the public function: eager autograd.Function returning a view),
op (the torch.library op ``torch.ops.genmodels.grad_reverse`` called directly, as
torch.compile traces it: a copy forward), recipe (``genmodels.recipes.grad_reverse_recipe``,
the usual autograd.Function with ``x.view_as(x)``) and compile (torch.compile of the recipe).
Modes: forward, backward, full. Every provider runs torch operations only (see the op's
docstring): the benchmark measures per-call overhead, which is the whole cost of this op.
extra_info holds the bytes a copy forward and a scaling backward move.

Sizes: DANN/ADDA features, [64, 500] (the digits batch) and [256, 500], and [4096, 4096].

    pytest benchmarks/bench_grad_reverse.py --benchmark-json=benchmarks/results/<name>.json
"""

import pytest
import torch
from conftest import DEVICE, run_mode

from genmodels import recipes
from genmodels.ops import grad_reverse

LAMBDA = 0.5
SIZES = [(64, 500), (256, 500), (4096, 4096)]
PROVIDERS = ["genmodels", "op", "recipe", "compile"]
MODES = ["forward", "backward", "full"]

_compiled = torch.compile(recipes.grad_reverse_recipe)


def _fn(provider):
    if provider == "genmodels":
        return lambda x: (grad_reverse(x, LAMBDA),)
    if provider == "op":
        return lambda x: (torch.ops.genmodels.grad_reverse(x, LAMBDA),)
    recipe = recipes.grad_reverse_recipe if provider == "recipe" else _compiled
    return lambda x: (recipe(x, LAMBDA),)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_grad_reverse(benchmark, size, provider, mode):
    benchmark.group = f"grad_reverse {'x'.join(map(str, size))} {mode}"
    x = torch.randn(size, device=DEVICE, requires_grad=True)
    grad = torch.randn(size, device=DEVICE)
    run_mode(benchmark, mode, _fn(provider), [x], (grad,))
    benchmark.extra_info.update(
        op="grad_reverse", provider=provider, mode=mode, numel=x.numel(),
        bytes=2 * x.numel() * x.element_size(),
    )  # fmt: skip
