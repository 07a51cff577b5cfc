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


def masked_conv2d_inplace_recipe(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor
) -> Tensor:
    """The masked convolution as pytorch-generative writes it, the cheapest hand-written
    form: the mask is multiplied into the weight in place, outside autograd, before each
    forward pass, so the convolution is one dense call with no extra autograd node. The
    masked taps still get (unused) gradients and are re-zeroed by the next call."""
    with torch.no_grad():
        weight.mul_(mask)
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


def pixelcnn_residual_block_recipe(
    x: Tensor,
    w1: Tensor,
    b1: Tensor | None,
    w2: Tensor,
    b2: Tensor | None,
    w3: Tensor,
    b3: Tensor | None,
    p: float,
    training: bool = True,
    color_groups: int = 1,
) -> Tensor:
    """PixelCNN's residual block as pytorch-generative writes it: each convolution's
    weight masked in place, then plain convolutions, ReLUs, torch's dropout and the add."""
    from genmodels.ops import make_mask

    h = torch.relu(x)
    for i, w in enumerate((w1, w2)):
        c_out, c_in, k, _ = w.shape
        mask = make_mask(c_out, c_in, k, "B", color_groups, dtype=w.dtype, device=w.device)
        h = torch.relu(masked_conv2d_inplace_recipe(h, w, (b1, b2)[i], mask))
    h = F.dropout(h, p, training=training)
    mask = make_mask(*w3.shape[:3], "B", color_groups, dtype=w3.dtype, device=w3.device)
    return x + masked_conv2d_inplace_recipe(h, w3, b3, mask)


def shifted_conv2d(x: Tensor, w_above: Tensor, w_row: Tensor, bias: Tensor | None) -> Tensor:
    """PixelCNN++'s no-waste alternative: the rows above through a down-shifted (c x k)
    convolution, the current row (left of the pixel, and the pixel for mask B) through a
    right-shifted (1 x c[+1]) one, summed."""
    h, w = x.shape[-2:]
    c = w_above.shape[-2]
    above = F.conv2d(F.pad(x, (c, c, c, 0)), w_above)[..., :h, :]
    row = F.conv2d(F.pad(x, (c, 0, 0, 0)), w_row, bias)[..., :w]
    return above + row


def gradient_penalty_recipe(grads: Tensor, target: float = 1.0) -> Tensor:
    """The WGAN-GP penalty term as Gulrajani et al.'s code computes it from the gradients."""
    return ((grads.reshape(grads.size(0), -1).norm(2, dim=1) - target) ** 2).mean()


def dropout_recipe(x: Tensor, p: float) -> Tensor:
    """torch's dropout: a Bernoulli mask drawn into memory and kept for backward."""
    return F.dropout(x, p, training=True)


def gate_recipe(pre: Tensor) -> Tensor:
    """The Gated PixelCNN activation as usually written: tanh of one half times the
    sigmoid of the other."""
    a, b = pre.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def masked_conv2d_gated_recipe(x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor):
    """A Gated PixelCNN unit as usually written: the `weight * mask` convolution, then the
    gate."""
    return gate_recipe(masked_conv2d_recipe(x, weight, bias, mask))


def row_lstm_recipe(gates_x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """PixelRNN's Row LSTM as usually written: a Python loop over rows, each a conv1d of
    the row above's h and the LSTM cell, all recorded by autograd."""
    batch, gates, height, width = gates_x.shape
    c = gates_x.new_zeros(batch, gates // 4, width)
    h = torch.zeros_like(c)
    rows = []
    for r in range(height):
        pre = gates_x[:, :, r] + F.conv1d(h, weight, bias, padding=weight.shape[-1] // 2)
        i, f, g, o = pre.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        rows.append(h)
    return torch.stack(rows, dim=2)


def diagonal_lstm_recipe(
    gates_x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False
) -> Tensor:
    """PixelRNN's Diagonal LSTM as the paper describes it: skew the map (row r shifted
    right by r), run a loop over the skewed map's columns, each a 2 x 1 convolution of the
    previous column's h and the LSTM cell, then unskew. The right-to-left LSTM flips the
    input and the output. Positions of the skewed map outside the image keep zero state."""
    if reverse:
        gates_x = gates_x.flip(3)
    batch, gates, height, width = gates_x.shape
    skewed_width = width + height - 1
    skewed = gates_x.new_zeros(batch, gates, height, skewed_width)
    inside = torch.zeros(height, skewed_width, dtype=torch.bool, device=gates_x.device)
    for r in range(height):
        skewed[:, :, r, r : r + width] = gates_x[:, :, r]
        inside[r, r : r + width] = True
    c = gates_x.new_zeros(batch, gates // 4, height)
    h = torch.zeros_like(c)
    columns = []
    for col in range(skewed_width):
        # out[r] = weight[..., 0] h[r - 1] + weight[..., 1] h[r] of the previous column.
        pre = skewed[:, :, :, col] + F.conv1d(F.pad(h, (1, 0)), weight, bias)
        i, f, g, o = pre.chunk(4, dim=1)
        keep = inside[:, col].to(gates_x.dtype)
        c = (torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)) * keep
        h = torch.sigmoid(o) * torch.tanh(c) * keep
        columns.append(h)
    out = torch.stack(columns, dim=3)
    out = torch.stack([out[:, :, r, r : r + width] for r in range(height)], dim=2)
    return out.flip(3) if reverse else out


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
