"""The first-order exact penalty gradients of piecewise-linear critics
(genmodels._critic_chain): gradient_penalty(method="piecewise-linear" and "auto") against
autograd's double backward."""

import pytest
import torch
from torch import nn

from genmodels._critic_chain import chain_of
from genmodels.gan import gradient_penalty
from genmodels.models import DCGAN

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
