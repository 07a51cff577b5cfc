"""Convolutional VAE (Kingma and Welling, 2014) with the fused reparameterize + KL op."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genmodels.models import _likelihood
from genmodels.models._args import check_levels, check_positive
from genmodels.nn import ReparameterizeKL
from genmodels.ops import reparameterize_kl


def _down_steps(image_size: int) -> int:
    """Stride-2 convolutions that bring the image to at most 4x4."""
    steps = 0
    while image_size > 4:
        image_size = (image_size + 1) // 2
        steps += 1
    return steps


class VAE(nn.Module):
    """A convolutional VAE whose likelihood is over the data's discrete levels.

    `elbo(x)` and `iwae(x, k)` return lower bounds on log p(x) in nats per image, so
    `-bound / (C * H * W * ln 2)` is an upper bound on the NLL in bits/dim.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        levels: int = 17,
        hidden_channels: int = 64,
        latent_dim: int = 16,
        likelihood: str = "categorical",
        beta: float = 1.0,
        backend: str = "auto",
    ):
        super().__init__()
        if likelihood not in _likelihood.LIKELIHOODS:
            raise ValueError(
                f"likelihood must be one of {_likelihood.LIKELIHOODS}, got {likelihood!r}"
            )
        if likelihood == "bernoulli" and levels != 2:
            raise ValueError(f"likelihood='bernoulli' needs levels=2, got levels={levels}")
        check_positive(in_channels=in_channels, image_size=image_size,
                       hidden_channels=hidden_channels, latent_dim=latent_dim)  # fmt: skip
        check_levels(levels)
        self.in_channels, self.image_size, self.levels = in_channels, image_size, levels
        self.latent_dim, self.likelihood, self.beta = latent_dim, likelihood, beta
        steps = _down_steps(image_size)
        self._sizes = [image_size]
        for _ in range(steps):
            self._sizes.append((self._sizes[-1] + 1) // 2)
        h = hidden_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, h, 3, padding=1), nn.ELU()]
        for _ in range(steps):
            layers += [nn.Conv2d(h, h, 3, stride=2, padding=1), nn.ELU()]
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        bottom = self._sizes[-1]
        self.to_posterior = nn.Linear(h * bottom * bottom, 2 * latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, h * bottom * bottom), nn.ELU())
        up: list[nn.Module] = []
        for size in reversed(self._sizes[:-1]):
            up += [
                nn.Upsample(size=(size, size), mode="nearest"),
                nn.Conv2d(h, h, 3, padding=1),
                nn.ELU(),
            ]
        out_ch = _likelihood.output_channels(likelihood, in_channels, levels)
        self.decoder = nn.Sequential(
            *up, nn.Conv2d(h, h, 3, padding=1), nn.ELU(), nn.Conv2d(h, out_ch, 1)
        )
        # The bounds are Monte Carlo estimates in eval mode too, so the layer always samples.
        self.sampler = ReparameterizeKL(sample_in_eval=True, backend=backend)
        self.backend = backend
        self._hidden = h

    @property
    def dims(self) -> int:
        return self.in_channels * self.image_size * self.image_size

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance [B, latent_dim] of integer-level images."""
        x = _likelihood.to_unit(x, self.levels, self.to_posterior.weight.dtype)
        stats = self.to_posterior(self.encoder(x))
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder output for latents [..., latent_dim] (likelihood parameters)."""
        lead = z.shape[:-1]
        bottom = self._sizes[-1]
        h = self.from_latent(z.reshape(-1, self.latent_dim)).view(-1, self._hidden, bottom, bottom)
        out = self.decoder(h)
        return out.view(*lead, *out.shape[1:])

    def _log_px(self, out: Tensor, x: Tensor) -> Tensor:
        return _likelihood.log_prob(out, x, self.likelihood, self.levels)

    def elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The evidence lower bound on log p(x), nats per image [B] (beta = 1)."""
        return self.elbo_terms(x, generator)[0]

    def elbo_terms(self, x: Tensor, generator=None) -> tuple[Tensor, Tensor, Tensor]:
        """(elbo, log p(x|z), KL), each per image."""
        mu, logvar = self.encode(x)
        z, kl = self.sampler(mu, logvar, generator=generator)
        log_px = self._log_px(self.decode(z), x)
        return log_px - kl, log_px, kl

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(elbo, log p(x|z), KL) per image: the training forward, so DDP syncs its grads."""
        return self.elbo_terms(x)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative beta-ELBO over the batch, in nats per image (the training loss)."""
        _, log_px, kl = self(x)
        return (self.beta * kl - log_px).mean()

    def iwae(self, x: Tensor, k: int = 100, generator: torch.Generator | None = None) -> Tensor:
        """The importance-weighted bound (Burda et al. 2016) with k samples, nats per image."""
        mu, logvar = self.encode(x)
        z, _ = reparameterize_kl(
            mu, logvar, num_samples=k, generator=generator, backend=self.backend
        )
        log_px = self._log_px(self.decode(z).flatten(0, 1), x.repeat(k, *([1] * (x.dim() - 1))))
        log_px = log_px.view(k, x.shape[0])
        var = logvar.exp()
        log_pz = -0.5 * (z * z + math.log(2 * math.pi)).sum(-1)
        log_qz = -0.5 * ((z - mu) ** 2 / var + logvar + math.log(2 * math.pi)).sum(-1)
        log_w = log_px + log_pz - log_qz
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n integer-level images [n, C, H, W] from the prior."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        shape = (n, self.in_channels, self.image_size, self.image_size)
        return _likelihood.sample(self.decode(z), shape, self.likelihood, self.levels, generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Most likely image under the decoder at the posterior mean."""
        out = self.decode(self.encode(x)[0])
        if self.likelihood == "categorical":
            b, c = x.shape[:2]
            return out.view(b, c, self.levels, *x.shape[2:]).argmax(2)
        return _likelihood.sample(out, x.shape, self.likelihood, self.levels)

    @torch.no_grad()
    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 8) -> Tensor:
        """Images decoded along the line between the posterior means of x0 and x1.

        Returns [steps, B, C, H, W]."""
        z0, z1 = self.encode(x0)[0], self.encode(x1)[0]
        t = torch.linspace(0, 1, steps, device=z0.device).view(-1, 1, 1)
        z = (1 - t) * z0 + t * z1
        out = self.decode(z).flatten(0, 1)
        images = _likelihood.sample(
            out, (steps * x0.shape[0], *x0.shape[1:]), self.likelihood, self.levels
        )
        return images.view(steps, *x0.shape)
