import math

import pytest
import torch

from genmodels.models import VAE, _likelihood


def digits_like(n=6, levels=17, size=8, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, channels, size, size), generator=g)


@pytest.mark.parametrize(
    "likelihood,levels", [("categorical", 17), ("bernoulli", 2), ("gaussian", 17)]
)
def test_likelihoods_are_normalized_over_the_levels(likelihood, levels):
    # One sub-pixel: the probabilities of every level must sum to one.
    out_ch = _likelihood.output_channels(likelihood, 1, levels)
    out = torch.randn(1, out_ch, 1, 1, generator=torch.Generator().manual_seed(1)).expand(
        levels, -1, -1, -1
    )
    x = torch.arange(levels).view(levels, 1, 1, 1)
    total = _likelihood.log_prob(out, x, likelihood, levels).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "likelihood,levels", [("categorical", 17), ("bernoulli", 2), ("gaussian", 256)]
)
@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3)])
def test_shapes_and_bounds(likelihood, levels, size, channels):
    torch.manual_seed(0)
    model = VAE(
        in_channels=channels,
        image_size=size,
        levels=levels,
        likelihood=likelihood,
        hidden_channels=16,
        latent_dim=4,
    )
    x = digits_like(5, levels, size, channels)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 4)
    elbo = model.elbo(x)
    iwae = model.iwae(x, k=7)
    assert elbo.shape == iwae.shape == (5,)
    assert torch.isfinite(elbo).all() and torch.isfinite(iwae).all()
    samples = model.sample(3)
    assert samples.shape == (3, channels, size, size)
    assert samples.min() >= 0 and samples.max() < levels
    assert model.interpolate(x[:2], x[2:4], steps=4).shape == (4, 2, channels, size, size)
    assert model.reconstruct(x).shape == x.shape


def test_iwae_tightens_the_elbo():
    torch.manual_seed(0)
    model = VAE(hidden_channels=16, latent_dim=4).eval()
    x = digits_like(8)
    g = torch.Generator().manual_seed(3)
    reps = 200
    with torch.no_grad():
        # Many independent draws at once: the batch repeated, averaged per image.
        elbo = model.elbo(x.repeat(reps, 1, 1, 1), generator=g).view(reps, -1).mean(0)
        iwae = model.iwae(x, k=200, generator=g)
        k1 = model.iwae(x.repeat(reps, 1, 1, 1), k=1, generator=g).view(reps, -1).mean(0)
    # E[ELBO] <= IWAE_k <= log p(x); the gap is large for an untrained encoder.
    assert (iwae > elbo).all()
    # With one sample the IWAE bound is the ELBO (same expectation).
    torch.testing.assert_close(k1, elbo, rtol=0.02, atol=0.5)


def test_elbo_samples_in_eval_mode_and_trains():
    torch.manual_seed(0)
    model = VAE(hidden_channels=16, latent_dim=4).eval()
    x = digits_like(4)
    a, b = model.elbo(x), model.elbo(x)
    assert not torch.equal(a, b), "the ELBO is a Monte Carlo estimate: it must sample"
    model.train()
    loss = model.loss(x)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    bpd = _likelihood.bits_per_dim(-a, model.dims)
    torch.testing.assert_close(bpd, -a / (64 * math.log(2)))


def test_beta_scales_the_kl():
    torch.manual_seed(0)
    x = digits_like(4)
    model = VAE(hidden_channels=8, latent_dim=3)
    torch.manual_seed(1)
    _, log_px, kl = model.elbo_terms(x)
    model.beta = 4.0
    torch.manual_seed(1)
    torch.testing.assert_close(model.loss(x), (4.0 * kl - log_px).mean())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(likelihood="poisson"), "likelihood"),
        (dict(likelihood="bernoulli", levels=17), "levels=2"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(image_size=2.5), "image_size"),
        (dict(levels=1), "levels"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(**kwargs)
