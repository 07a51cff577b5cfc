"""Per-image log-likelihoods of integer-level images under a decoder's output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")


def to_unit(x: Tensor, levels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Integer levels [0, levels) to floats in [-1, 1] (a model passes its parameters' dtype)."""
    return x.to(dtype) * (2.0 / (levels - 1)) - 1.0


def output_channels(likelihood: str, channels: int, levels: int) -> int:
    if likelihood == "categorical":
        return channels * levels
    if likelihood == "bernoulli":
        return channels
    return 2 * channels  # gaussian: mean and log-scale


def log_prob(out: Tensor, x: Tensor, likelihood: str, levels: int) -> Tensor:
    """log p(x | decoder output) in nats per image, summed over every sub-pixel.

    categorical: a softmax over the levels of each sub-pixel, out [B, C*levels, H, W].
    bernoulli: x in {0, 1}, out the logits [B, C, H, W].
    gaussian: the probability mass of each level's bin under N(mean, scale), x mapped to
    [-1, 1], so the value is a discrete likelihood comparable with the others.
    """
    b, c = x.shape[:2]
    if likelihood == "categorical":
        logits = out.view(b, c, levels, *x.shape[2:]).transpose(1, 2)  # [B, levels, C, H, W]
        return -F.cross_entropy(logits.float(), x.long(), reduction="none").flatten(1).sum(1)
    if likelihood == "bernoulli":
        target = x.float()
        nll = F.binary_cross_entropy_with_logits(out.float(), target, reduction="none")
        return -nll.flatten(1).sum(1)
    mean, log_scale = out.float().chunk(2, dim=1)
    log_scale = log_scale.clamp(min=-7.0)
    half_bin = 1.0 / (levels - 1)
    xu = to_unit(x, levels)
    normal = torch.distributions.Normal(mean, log_scale.exp())
    upper = torch.where(x >= levels - 1, torch.ones_like(xu), normal.cdf(xu + half_bin))
    lower = torch.where(x <= 0, torch.zeros_like(xu), normal.cdf(xu - half_bin))
    mass = (upper - lower).clamp(min=1e-12)
    return mass.log().flatten(1).sum(1)


def sample(out: Tensor, shape, likelihood: str, levels: int, generator=None) -> Tensor:
    """Integer-level images drawn from the decoder output."""
    b, c = shape[:2]
    if likelihood == "categorical":
        logits = out.view(b, c, levels, *shape[2:]).permute(0, 1, 3, 4, 2).float()
        probs = logits.softmax(-1).reshape(-1, levels)
        return torch.multinomial(probs, 1, generator=generator).view(shape)
    if likelihood == "bernoulli":
        return torch.bernoulli(out.float().sigmoid(), generator=generator).long()
    mean, log_scale = out.float().chunk(2, dim=1)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
    xu = (mean + noise * log_scale.clamp(min=-7.0).exp()).clamp(-1, 1)
    return torch.round((xu + 1) * (levels - 1) / 2).long()


def bits_per_dim(nll_nats: Tensor, dims: int) -> Tensor:
    return nll_nats / (dims * math.log(2.0))
