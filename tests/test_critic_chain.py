"""The first-order exact penalty gradients of piecewise-linear critics
(genmodels._critic_chain): gradient_penalty(method="piecewise-linear" and "auto") against
autograd's double backward."""

import pytest
import torch
from torch import nn

from genmodels._critic_chain import chain_of
from genmodels.gan import gradient_penalty
from genmodels.models import DCGAN
from genmodels.models.dcgan import Discriminator
from genmodels.ops import make_mask

KINDS = ["wgan-gp", "dragan", "r1", "r2"]


def _mixed_critic(dtype=torch.float64, seed=0):
    """Every supported layer and option: no bias, stride, dilation, groups, nesting,
    ReLU and LeakyReLU, a hidden Linear, and an activation before the first affine layer."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.LeakyReLU(0.3),
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.LeakyReLU(0.1),
        nn.Sequential(nn.Conv2d(4, 6, 4, stride=2, padding=1), nn.Identity(), nn.ReLU()),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=2),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(6 * 5 * 5, 5),
        nn.ReLU(),
        nn.Linear(5, 1),
    ).to(dtype)


def _dcgan_critic(dtype=torch.float64, image_size=8, channels=2, seed=0):
    torch.manual_seed(seed)
    model = DCGAN(image_size=image_size, in_channels=channels, hidden_channels=4)
    return model.discriminator.to(dtype)


def _data(dtype, batch=7, size=10, channels=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(batch, channels, size, size, generator=g, dtype=dtype) * 2 - 1
    fake = torch.tanh(torch.randn(batch, channels, size, size, generator=g, dtype=dtype))
    return real, fake


def _grads(D, value):
    return torch.autograd.grad(value, list(D.parameters()), materialize_grads=True)


def _assert_same(D, a, b, **tol):
    torch.testing.assert_close(a, b, **tol)
    for ga, gb in zip(_grads(D, a), _grads(D, b), strict=True):
        torch.testing.assert_close(ga, gb, **tol)


CRITICS = [
    pytest.param(lambda dtype: (_mixed_critic(dtype), 10), id="mixed-sequential"),
    pytest.param(lambda dtype: (_dcgan_critic(dtype), 8), id="dcgan-8"),
    pytest.param(lambda dtype: (_dcgan_critic(dtype, image_size=28), 28), id="dcgan-28"),
]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-4, atol=1e-6)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("make", CRITICS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("one_sided", [False, True])
def test_penalty_matches_double_backward(kind, make, dtype, one_sided):
    if one_sided and kind in ("r1", "r2"):
        pytest.skip("one_sided applies to WGAN-GP and DRAGAN")
    D, size = make(dtype)
    real, fake = _data(dtype, size=size)
    results = []
    for method in ("autograd", "piecewise-linear"):
        g = torch.Generator().manual_seed(3)
        results.append(
            gradient_penalty(
                D,
                real,
                fake,
                kind=kind,
                method=method,
                one_sided=one_sided,
                target=0.5,
                generator=g,
            )  # fmt: skip
        )
    _assert_same(D, *results, **TOL[dtype])


@pytest.mark.parametrize("batch", [1, 2, 13])
def test_penalty_odd_batches_and_layouts(batch):
    D = _mixed_critic()
    real, fake = _data(torch.float64, batch=batch)
    real = real.contiguous(memory_format=torch.channels_last)
    fake = fake.transpose(2, 3).contiguous().transpose(2, 3)  # non-contiguous view
    alpha = torch.rand(batch, dtype=torch.float64)
    a = gradient_penalty(D, real, fake, alpha=alpha)
    b = gradient_penalty(D, real, fake, alpha=alpha, method="piecewise-linear")
    _assert_same(D, a, b, **TOL[torch.float64])


def test_penalty_with_a_layer_used_twice():
    torch.manual_seed(0)
    shared = nn.Conv2d(2, 2, 3, padding=1)
    D = nn.Sequential(shared, nn.LeakyReLU(0.2), shared, nn.ReLU(), nn.Flatten(),
                      nn.Linear(2 * 10 * 10, 1)).double()  # fmt: skip
    real, fake = _data(torch.float64)
    alpha = torch.rand(7, dtype=torch.float64)
    a = gradient_penalty(D, real, fake, alpha=alpha)
    b = gradient_penalty(D, real, fake, alpha=alpha, method="piecewise-linear")
    _assert_same(D, a, b, **TOL[torch.float64])


def test_penalty_empty_batch_is_like_autograd():
    D = _mixed_critic()
    real, fake = _data(torch.float64, batch=0)
    a = gradient_penalty(D, real, fake)
    b = gradient_penalty(D, real, fake, method="piecewise-linear")
    torch.testing.assert_close(a, b, equal_nan=True)
    for g in _grads(D, b):
        assert torch.isfinite(g).all() and not g.any()


def test_auto_takes_the_first_order_method_on_chains():
    D = _dcgan_critic(image_size=8)
    real, fake = _data(torch.float64, size=8)
    alpha = torch.rand(7, dtype=torch.float64)
    auto = gradient_penalty(D, real, fake, alpha=alpha, method="auto")
    assert type(auto.grad_fn).__name__ == "_WithParameterGradsBackward"  # no double backward
    _assert_same(D, auto, gradient_penalty(D, real, fake, alpha=alpha), **TOL[torch.float64])


def test_auto_falls_back_to_autograd():
    """A conditional critic (critic_args) and autocast take the double backward."""
    torch.manual_seed(0)
    D = DCGAN(hidden_channels=4, num_classes=3).discriminator.double()
    assert chain_of(D) is None
    real, fake = _data(torch.float64, batch=5, size=8, channels=1)
    y = torch.tensor([0, 1, 2, 0, 1])
    alpha = torch.rand(5, dtype=torch.float64)
    auto = gradient_penalty(D, real, fake, alpha=alpha, critic_args=(y,), method="auto")
    plain = gradient_penalty(D, real, fake, alpha=alpha, critic_args=(y,))
    _assert_same(D, auto, plain, **TOL[torch.float64])
    chain = _dcgan_critic(image_size=8, channels=1).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gradient_penalty(chain, real.float(), fake.float(), method="auto")
    assert type(out.grad_fn).__name__ != "_WithParameterGradsBackward"


def test_trains_like_autograd():
    """Five Adam steps of a WGAN-GP critic with either method end at the same weights."""
    weights = []
    for method in ("autograd", "piecewise-linear"):
        D = _dcgan_critic(image_size=8)
        opt = torch.optim.Adam(D.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for step in range(5):
            real, fake = _data(torch.float64, batch=6, size=8, seed=step)
            loss = D(fake).mean() - D(real).mean()
            loss = loss + gradient_penalty(D, real, fake, method=method, generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in D.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-9, atol=1e-11)


def test_equals_the_canonical_recipe():
    """Against the WGAN-GP penalty as Gulrajani et al. write it, with the same alpha."""
    D = _dcgan_critic(image_size=8)
    real, fake = _data(torch.float64, batch=9, size=8)
    alpha = torch.rand(9, dtype=torch.float64)
    a = alpha.view(-1, 1, 1, 1)
    x = (a * real + (1 - a) * fake).requires_grad_()
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    recipe = 10 * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    ours = gradient_penalty(D, real, fake, alpha=alpha, method="piecewise-linear")
    _assert_same(D, ours, recipe, **TOL[torch.float64])


def test_chain_of():
    assert chain_of(_mixed_critic()) is not None
    assert len(chain_of(_dcgan_critic())) == 6  # conv, lrelu, conv, lrelu, flatten, linear
    conditional = DCGAN(hidden_channels=4, num_classes=3).discriminator
    batch_norm = DCGAN(hidden_channels=4, batch_norm_critic=True).discriminator
    rejected = [
        conditional,
        batch_norm,
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.LazyLinear(1)),
        nn.Sequential(nn.Conv2d(1, 1, 3, padding="same")),
        nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
        nn.Sequential(nn.Flatten(start_dim=2)),
        nn.Sequential(nn.ReLU(), nn.Flatten()),  # nothing affine
        lambda x: x.sum(),
    ]
    for D in rejected:
        assert chain_of(D) is None, D


def test_bad_inputs():
    D = _mixed_critic()
    real, fake = _data(torch.float64)
    not_a_chain = nn.Sequential(nn.Conv2d(2, 1, 3), nn.Tanh(), nn.Flatten(), nn.Linear(64, 1))
    with pytest.raises(ValueError, match="piecewise-linear.*Sequential"):
        gradient_penalty(not_a_chain.double(), real, fake, method="piecewise-linear")
    with pytest.raises(ValueError, match="critic_args"):
        gradient_penalty(D, real, fake, method="piecewise-linear", critic_args=(1,))
    with pytest.raises(ValueError, match="scaler"):
        gradient_penalty(
            D, real, fake, method="piecewise-linear", scaler=torch.amp.GradScaler("cpu")
        )
    with pytest.raises(ValueError, match="autocast"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            gradient_penalty(D, real, fake, method="piecewise-linear")
    with pytest.raises(RuntimeError, match="one score per sample"):
        gradient_penalty(nn.Sequential(nn.Conv2d(2, 3, 3)).double(), real, fake,
                         method="piecewise-linear")  # fmt: skip


def test_leaky_relu_slope_convention_at_zero():
    """Pre-activations exactly 0 take the negative slope, as autograd's backward does."""
    D = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.25), nn.Linear(4, 1)).double()
    with torch.no_grad():
        D[0].weight.zero_()
        D[0].bias.zero_()  # every hidden pre-activation is 0
    real, fake = _data(torch.float64, batch=4)
    real, fake = real[:, 0, 0, :3], fake[:, 0, 0, :3]
    a = gradient_penalty(D, real, fake)
    b = gradient_penalty(D, real, fake, method="piecewise-linear")
    _assert_same(D, a, b, **TOL[torch.float64])


# --- critics the chain must not take: "auto" falls back, "piecewise-linear" refuses ------


def _small_critic(first: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(first, nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 8 * 8, 1)).double()


def _masked_critic():
    from genmodels.nn import MaskedConv2d

    return _small_critic(MaskedConv2d(1, 4, 3, "A", backend="reference")), "MaskedConv2d"


def _spectral_norm_critic():
    from torch.nn.utils.parametrizations import spectral_norm

    return _small_critic(spectral_norm(nn.Conv2d(1, 4, 3, padding=1))), "parametrizations"


def _old_spectral_norm_critic():
    return _small_critic(nn.utils.spectral_norm(nn.Conv2d(1, 4, 3, padding=1))), "pre_hooks"


def _weight_norm_critic():
    from torch.nn.utils.parametrizations import weight_norm

    return _small_critic(weight_norm(nn.Conv2d(1, 4, 3, padding=1))), "parametrizations"


def _old_weight_norm_critic():
    return _small_critic(nn.utils.weight_norm(nn.Conv2d(1, 4, 3, padding=1))), "pre_hooks"


def _forward_hook_critic():
    D = _small_critic(nn.Conv2d(1, 4, 3, padding=1))
    D[1].register_forward_hook(lambda m, args, out: out * 2)
    return D, "forward_hooks"


def _backward_hook_critic():
    D = _small_critic(nn.Conv2d(1, 4, 3, padding=1))
    D[0].register_full_backward_hook(lambda m, gin, gout: (gin[0] * 3,))
    return D, "backward_hooks"


def _sequential_hook_critic():
    D = _small_critic(nn.Conv2d(1, 4, 3, padding=1))
    D.register_forward_pre_hook(lambda m, args: (args[0] * 0.5,))
    return D, "forward_pre_hooks"


class _ScaledSequential(nn.Sequential):
    def forward(self, x):
        return 3 * super().forward(x)


def _sequential_subclass_critic():
    torch.manual_seed(0)
    D = _ScaledSequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 1)
    )
    return D.double(), "_ScaledSequential"


class _DoubledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def _linear_subclass_critic():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      _DoubledLinear(4 * 8 * 8, 1))  # fmt: skip
    return D.double(), "_DoubledLinear"


class _ShiftedCritic(Discriminator):
    def forward(self, x, y=None):
        return super().forward(x, y) + x.flatten(1).sum(1)


def _overridden_dcgan_critic():
    torch.manual_seed(0)
    D = _ShiftedCritic(in_channels=1, hidden_channels=4, image_size=8, batch_norm=False)
    return D.double(), "overrides"


REFUSED = [
    pytest.param(_masked_critic, id="masked-conv2d"),
    pytest.param(_spectral_norm_critic, id="spectral-norm-parametrization"),
    pytest.param(_old_spectral_norm_critic, id="spectral-norm-pre-hook"),
    pytest.param(_weight_norm_critic, id="weight-norm-parametrization"),
    pytest.param(_old_weight_norm_critic, id="weight-norm-pre-hook"),
    pytest.param(_forward_hook_critic, id="forward-hook"),
    pytest.param(_backward_hook_critic, id="backward-hook"),
    pytest.param(_sequential_hook_critic, id="container-pre-hook"),
    pytest.param(_sequential_subclass_critic, id="sequential-subclass"),
    pytest.param(_linear_subclass_critic, id="linear-subclass"),
    pytest.param(_overridden_dcgan_critic, id="critic-subclass-forward"),
]


def _penalty_and_grads(D, method, real, fake, alpha):
    # A fresh D call each time: the old spectral_norm updates its vectors in every forward.
    value = gradient_penalty(D, real, fake, alpha=alpha, method=method)
    params = [p for p in D.parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return value.detach(), grads


@pytest.mark.parametrize("make", REFUSED)
def test_auto_falls_back_on_critics_it_cannot_take(make):
    D, reason = make()
    real, fake = _data(torch.float64, batch=5, size=8, channels=1)
    alpha = torch.rand(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    state = {k: v.clone() for k, v in D.state_dict().items()}
    expected, expected_grads = _penalty_and_grads(D, "autograd", real, fake, alpha)
    D.load_state_dict(state)  # the old spectral_norm's power iteration moved on
    auto, auto_grads = _penalty_and_grads(D, "auto", real, fake, alpha)
    torch.testing.assert_close(auto, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(auto_grads, expected_grads, strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert any(g is not None and g.abs().sum() > 0 for g in auto_grads)
    with pytest.raises(ValueError, match=f"piecewise-linear.*{reason}"):
        gradient_penalty(D, real, fake, alpha=alpha, method="piecewise-linear")


def test_masked_critic_values_differ_from_its_unmasked_chain():
    """The reproduction of the issue: the chain ran the unmasked convolution, 7.35 vs 6.18."""
    D, _ = _masked_critic()
    real, fake = _data(torch.float64, batch=5, size=8, channels=1)
    alpha = torch.rand(5, dtype=torch.float64)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), *list(D)[1:]).double()
    plain[0].load_state_dict(D[0].state_dict())
    masked = gradient_penalty(D, real, fake, alpha=alpha, method="auto")
    unmasked = gradient_penalty(plain, real, fake, alpha=alpha, method="auto")
    assert not torch.allclose(masked, unmasked)
    (gw,) = torch.autograd.grad(masked, D[0].weight)
    mask = make_mask(4, 1, 3, "A", dtype=torch.float64)
    assert not gw[mask == 0].any() and gw[mask == 1].abs().sum() > 0


def test_global_module_hooks_make_auto_fall_back():
    D = _mixed_critic()
    real, fake = _data(torch.float64, batch=3)
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: out)
    try:
        assert chain_of(D) is None
        out = gradient_penalty(D, real, fake, method="auto")
        assert type(out.grad_fn).__name__ != "_WithParameterGradsBackward"
        with pytest.raises(ValueError, match="global module hooks"):
            gradient_penalty(D, real, fake, method="piecewise-linear")
    finally:
        handle.remove()
    assert chain_of(D) is not None


def test_distributed_data_parallel_critic_is_refused_by_the_chain(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        D = nn.parallel.DistributedDataParallel(_mixed_critic())
        real, fake = _data(torch.float64, batch=4)
        alpha = torch.rand(4, dtype=torch.float64)
        assert chain_of(D) is None
        auto = gradient_penalty(D, real, fake, alpha=alpha, method="auto")
        assert type(auto.grad_fn).__name__ != "_WithParameterGradsBackward"
        plain = gradient_penalty(D.module, real, fake, alpha=alpha, method="autograd")
        torch.testing.assert_close(auto, plain, rtol=1e-10, atol=1e-12)
        with pytest.raises(ValueError, match="DistributedDataParallel"):
            gradient_penalty(D, real, fake, method="piecewise-linear")
    finally:
        dist.destroy_process_group()
