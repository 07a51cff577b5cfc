"""The genmodels models rewritten with plain PyTorch layers: the baselines of
bench_models.py.

`plain_twin(model, masking="inplace")` returns a deep copy of a genmodels model (same
weights, same architecture) in which every genmodels kernel is replaced by the code users
write today: masked convolutions become a plain `nn.Conv2d` whose weight is multiplied by
the mask in place, outside autograd, before each forward pass (`masking="inplace"`, what
pytorch-generative does: one dense convolution, no extra autograd node; the strongest
hand-written recipe and the default) or `F.conv2d(x, weight * mask)` with the mask in a
buffer (`masking="product"`, one more autograd node and a masked copy each pass), the
Gated PixelCNN unit becomes that convolution plus an eager gate, dropout becomes
`torch.nn.Dropout`, and the VAE's sampler becomes the eager reparameterization and KL.
The DCGAN's difference is in its training step (the canonical penalty), see
`bench_models.py`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genmodels.models import VAE, GatedPixelCNN, PixelCNN, PixelRNN
from genmodels.nn import DiagonalLSTM, Dropout, GatedPixelCNNLayer, MaskedConv2d, RowLSTM
from genmodels.ops import make_mask
from genmodels.ops.masked_conv2d import gated_activation
from genmodels.recipes import (
    diagonal_lstm_recipe,
    reparameterize_kl_recipe,
    row_lstm_recipe,
)


class RecipeMaskedConv2d(nn.Conv2d):
    """The masked convolution as `F.conv2d(x, weight * mask)` (masking="product")."""

    def __init__(self, conv: MaskedConv2d):
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
        )  # fmt: skip
        self.load_state_dict(conv.state_dict())
        c_out, c_in, k, _ = conv.weight.shape
        mask = make_mask(c_out, c_in, k, conv.mask_type, conv.color_groups)
        self.register_buffer("mask", mask.to(conv.weight), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class InplaceMaskedConv2d(RecipeMaskedConv2d):
    """The masked convolution as pytorch-generative writes it (masking="inplace"): the
    weight is masked in place before each forward, then one plain dense convolution."""

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            self.weight.mul_(self.mask)
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)


MASKINGS = {"inplace": InplaceMaskedConv2d, "product": RecipeMaskedConv2d}


def recipe_dropout(module: nn.Module) -> nn.Module:
    """torch's nn.Dropout in place of a genmodels Dropout (anything else is copied)."""
    if not isinstance(module, Dropout):
        return copy.deepcopy(module)
    return nn.Dropout(module.p).train(module.training)


class RecipeGatedLayer(nn.Module):
    """GatedPixelCNNLayer's forward with recipe convolutions and an eager gate."""

    def __init__(self, layer: GatedPixelCNNLayer, conv=RecipeMaskedConv2d):
        super().__init__()
        self.color_groups, self.residual = layer.color_groups, layer.residual
        self.conv_v = conv(layer.conv_v)
        self.conv_h = conv(layer.conv_h)
        self.v_to_h = copy.deepcopy(layer.v_to_h)
        self.h_out = conv(layer.h_out)
        self.skip = conv(layer.skip)
        self.cond_v, self.cond_h = copy.deepcopy(layer.cond_v), copy.deepcopy(layer.cond_h)
        self.dropout = recipe_dropout(layer.dropout)

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None = None):
        v_pre = self.conv_v(v)
        if self.cond_v is not None:
            v_pre = v_pre + self.cond_v(y)[:, :, None, None]
        h_pre = self.conv_h(h) + self.v_to_h(v_pre)
        if self.cond_h is not None:
            h_pre = h_pre + self.cond_h(y)[:, :, None, None]
        h_gated = self.dropout(gated_activation(h_pre, self.color_groups))
        h_new = self.h_out(h_gated)
        if self.residual:
            h_new = h_new + h
        return gated_activation(v_pre, self.color_groups), h_new, self.skip(h_gated)


class RecipeSampler(nn.Module):
    """The VAE's sampling layer as most PyTorch VAEs write it."""

    def forward(self, mu: Tensor, logvar: Tensor, generator=None) -> tuple[Tensor, Tensor]:
        return reparameterize_kl_recipe(mu, logvar)


class RecipeRowLSTM(nn.Module):
    """The Row LSTM as a Python loop over rows (genmodels.recipes.row_lstm_recipe)."""

    def __init__(self, layer: RowLSTM):
        super().__init__()
        self.weight, self.bias = copy.deepcopy(layer.weight), copy.deepcopy(layer.bias)

    def forward(self, gates_x: Tensor) -> Tensor:
        return row_lstm_recipe(gates_x, self.weight, self.bias)


class RecipeDiagonalLSTM(nn.Module):
    """The Diagonal LSTM as the paper's skew and a Python loop over the skewed columns."""

    def __init__(self, layer: DiagonalLSTM):
        super().__init__()
        self.weight, self.bias = copy.deepcopy(layer.weight), copy.deepcopy(layer.bias)
        self.reverse = layer.reverse

    def forward(self, gates_x: Tensor) -> Tensor:
        return diagonal_lstm_recipe(gates_x, self.weight, self.bias, self.reverse)


def _swap(module: nn.Module, conv) -> None:
    for name, child in module.named_children():
        if isinstance(child, MaskedConv2d):
            setattr(module, name, conv(child))
        elif isinstance(child, GatedPixelCNNLayer):
            setattr(module, name, RecipeGatedLayer(child, conv))
        elif isinstance(child, Dropout):
            setattr(module, name, recipe_dropout(child))
        elif isinstance(child, RowLSTM):
            setattr(module, name, RecipeRowLSTM(child))
        elif isinstance(child, DiagonalLSTM):
            setattr(module, name, RecipeDiagonalLSTM(child))
        else:
            _swap(child, conv)


def plain_twin(model: nn.Module, masking: str = "inplace") -> nn.Module:
    """A copy of `model` with the same weights and plain-PyTorch layers; `masking` picks
    the masked convolution ("inplace" or "product", see the module docstring)."""
    if not isinstance(model, (PixelCNN, GatedPixelCNN, PixelRNN, VAE)):
        raise TypeError(f"no plain twin for {type(model).__name__}")
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {tuple(MASKINGS)}, got {masking!r}")
    twin = copy.deepcopy(model)
    _swap(twin, MASKINGS[masking])
    if isinstance(twin, VAE):
        twin.sampler = RecipeSampler()
    return twin


__all__ = ["plain_twin"]


if __name__ == "__main__":  # a quick equality check
    torch.manual_seed(0)
    for m in (PixelCNN(), GatedPixelCNN()):
        x = torch.randint(0, 17, (4, 1, 8, 8))
        for masking in MASKINGS:
            diff = (m(x) - plain_twin(m, masking)(x)).abs().max().item()
            print(type(m).__name__, masking, diff)
