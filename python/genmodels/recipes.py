"""The plain-PyTorch code users write today, kept as the baselines that benchmarks and
`genmodels bench` compare the fused ops against. Not used by the ops themselves."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reparameterize_kl_recipe(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """The VAE sampling step as written in most PyTorch VAEs: z and the per-sample KL."""
    std = torch.exp(0.5 * logvar)
    eps = torch.randn_like(std)
    z = mu + eps * std
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=tuple(range(1, mu.dim())))
    return z, kl


def masked_conv2d_recipe(x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor) -> Tensor:
    """The PixelCNN masked convolution as usually written: a dense convolution of the
    weight times the mask, so every masked tap is still multiplied."""
    return F.conv2d(x, weight * mask, bias, padding=weight.shape[-1] // 2)


def shifted_conv2d(x: Tensor, w_above: Tensor, w_row: Tensor, bias: Tensor | None) -> Tensor:
    """PixelCNN++'s no-waste alternative: the rows above through a down-shifted (c x k)
    convolution, the current row (left of the pixel, and the pixel for mask B) through a
    right-shifted (1 x c[+1]) one, summed."""
    h, w = x.shape[-2:]
    c = w_above.shape[-2]
    above = F.conv2d(F.pad(x, (c, c, c, 0)), w_above)[..., :h, :]
    row = F.conv2d(F.pad(x, (c, 0, 0, 0)), w_row, bias)[..., :w]
    return above + row


class _GradReverseRecipe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out.neg() * ctx.lambda_, None


def grad_reverse_recipe(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """The gradient-reversal layer as written in most domain-adaptation code (e.g. the
    DANN reimplementations): an autograd.Function returning `x.view_as(x)`, whose backward
    negates and scales the gradient."""
    return _GradReverseRecipe.apply(x, lambda_)
