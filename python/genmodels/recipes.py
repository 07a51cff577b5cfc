"""The plain-PyTorch code users write today, kept as the baselines that benchmarks and
`genmodels bench` compare the fused ops against. Not used by the ops themselves."""

from __future__ import annotations

import torch
from torch import Tensor


def reparameterize_kl_recipe(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """The VAE sampling step as written in most PyTorch VAEs: z and the per-sample KL."""
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=tuple(range(1, mu.dim())))
    return z, kl
