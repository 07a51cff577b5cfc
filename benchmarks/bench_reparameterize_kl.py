"""reparameterize_kl against the eager recipe and torch.compile of it.

Providers: genmodels native, genmodels triton (GPU), the eager recipe (randn_like, exp,
closed-form KL per sample) and torch.compile of that recipe. Modes: forward, backward,
full. `extra_info` has achieved GB/s on the minimal bytes (read mu and logvar, write z and
kl; backward reads grad_z, grad_kl, mu and logvar and writes both gradients: the noise is
regenerated, never read) and its share of the copy bandwidth measured in the same run.
"""

import pytest
import torch
from conftest import DEVICE, ON_GPU, copy_bandwidth, record, run_mode  # noqa: F401

from genmodels.ops import reparameterize_kl
from genmodels.recipes import reparameterize_kl_recipe

SIZES = [(128, 32), (1024, 1024), (256, 32768), (4096, 4096), (8192, 8192)]
PROVIDERS = ["native", "eager", "compile"] + (["triton", "empty-launch"] if ON_GPU else [])
MODES = ["forward", "backward", "full"]

_compiled = torch.compile(reparameterize_kl_recipe)


def _fn(provider):
    if provider in ("native", "triton"):
        return lambda mu, lv: reparameterize_kl(mu, lv, backend=provider)
    if provider == "eager":
        return reparameterize_kl_recipe
    return _compiled


def _minimal_bytes(mode, rows, cols, itemsize):
    n = rows * cols
    forward = (3 * n + rows) * itemsize
    backward = (5 * n + rows) * itemsize
    return {"forward": forward, "backward": backward, "full": forward + backward}[mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_reparameterize_kl(benchmark, copy_bandwidth, size, provider, mode):  # noqa: F811
    rows, cols = size
    benchmark.group = f"reparameterize_kl {rows}x{cols} {mode}"
    mu = torch.randn(rows, cols, device=DEVICE, requires_grad=True)
    logvar = torch.randn(rows, cols, device=DEVICE, requires_grad=True)
    grads = (torch.randn(rows, cols, device=DEVICE), torch.randn(rows, device=DEVICE))
    if provider == "empty-launch":
        if mode != "forward" or size != (128, 32):
            pytest.skip("the launch-latency floor is measured once")
        one = torch.zeros(1, device=DEVICE)
        run_mode(benchmark, "forward", lambda x: x.add_(1), [one], ())
    else:
        run_mode(benchmark, mode, _fn(provider), [mu, logvar], grads)
    record(
        benchmark,
        bytes_moved=_minimal_bytes(mode, rows, cols, mu.element_size()),
        copy_gbps=copy_bandwidth,
        op="reparameterize_kl",
        provider=provider,
        mode=mode,
        size=f"{rows}x{cols}",
        numel=rows * cols,
    )
