"""PixelCNN (van den Oord et al. 2016a) and Gated PixelCNN (van den Oord et al. 2016b)
on genmodels' masked convolutions: every training step runs the masked-conv kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genmodels.models._args import check_levels, check_positive, check_probability
from genmodels.models._likelihood import to_unit
from genmodels.nn import Dropout, GatedPixelCNNLayer, MaskedConv2d
from genmodels.nn.pixelcnn_residual_block import run_block


def _dropout(p: float, backend: str) -> nn.Module:
    # Per-element dropout never mixes positions, so the blocks stay causal.
    return Dropout(p, backend=backend) if p > 0 else nn.Identity()


class _Autoregressive(nn.Module):
    """Shared by both models: a softmax over the data's levels for every sub-pixel."""

    def __init__(self, in_channels, image_size, levels, hidden_channels, num_layers, num_classes):
        super().__init__()
        check_positive(in_channels=in_channels, image_size=image_size,
                        hidden_channels=hidden_channels, num_layers=num_layers)  # fmt: skip
        check_levels(levels)
        if num_classes is not None:
            check_positive(num_classes=num_classes)
        self.in_channels, self.image_size, self.levels = in_channels, image_size, levels
        self.num_classes = num_classes
        # RGB data orders the sub-pixels R, G, B at each position (colour-group masks).
        self.color_groups = 3 if in_channels == 3 else 1
        if hidden_channels % (2 * self.color_groups):
            raise ValueError(
                f"hidden_channels must be divisible by {2 * self.color_groups} for "
                f"{in_channels}-channel data, got {hidden_channels}"
            )

    @property
    def dims(self) -> int:
        return self.in_channels * self.image_size * self.image_size

    def _logits(self, out: Tensor) -> Tensor:
        b, _, h, w = out.shape
        # Output channels are colour-group blocks: [C, levels] -> [levels, C].
        return out.view(b, self.in_channels, self.levels, h, w).transpose(1, 2)

    def _check_x(self, x: Tensor, y: Tensor | None) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise RuntimeError(
                f"x must be [B, {', '.join(map(str, expected))}], got {list(x.shape)}"
            )
        if self.num_classes is not None and y is None:
            raise ValueError("this model is class-conditional: pass the labels y")

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        self._check_x(x, y)
        return self._logits(self._net(x, y))

    def _net(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The output layer's [B, C * levels, H', W'] for images of any height H'."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) in nats per image [B]."""
        logits = self(x, y)
        return -F.cross_entropy(logits.float(), x.long(), reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Tensor | None = None,
        generator=None,
        *,
        method: str = "cached",
        backend: str = "auto",
    ) -> Tensor:
        """n images [n, C, H, W] drawn pixel by pixel and sub-pixel by sub-pixel.

        `method="cached"` (default) computes each layer at the new position only, from
        caches of its input (genmodels.ops.pixelcnn_sampling); `method="naive"` re-runs
        the network for every sub-pixel. Both draw the same images for the same
        `generator` (up to float32 rounding of the logits). The cached sampler needs eval
        mode when the model has dropout; a model it does not understand (hooks,
        parametrizations, a subclass) is sampled naively, with a warning. `backend` picks
        the cached sampler's kernels: "auto", "native", "triton" or "reference"."""
        from genmodels.models import _sampling

        _sampling.check_method(method)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        device = next(self.parameters()).device
        if self.num_classes is not None and y is None:
            y = torch.arange(n, device=device) % self.num_classes
        if y is not None:
            _sampling.check_labels(y, n, self.num_classes, device)
        if n == 0:
            size = self.image_size
            return torch.zeros(0, self.in_channels, size, size, dtype=torch.long, device=device)
        if method == "cached":
            reason = _sampling.unsupported_reason(self)
            if reason is None:
                return _sampling.cached(self, n, y, generator, backend=backend)[0]
            _sampling.fallback_warning(reason)
        return _sampling.naive(self, n, y, generator)


class PixelCNN(_Autoregressive):
    """7x7 mask-A input layer, residual blocks of 1x1 / 3x3 mask-B / 1x1 convolutions,
    two 1x1 output layers; `forward(x)` takes integer levels and returns logits
    [B, levels, C, H, W]. `dropout` acts before each block's last 1x1 convolution (its
    default, 0.2, and the 8 blocks are what the digits' 1000 training images want).

    Each block runs as one op, `genmodels.ops.pixelcnn_residual_block` (one autograd node),
    with the same parameters and `state_dict` as the layer-by-layer `nn.Sequential` it holds;
    a block whose modules were replaced, hooked or parametrized runs layer by layer."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        levels: int = 17,
        hidden_channels: int = 64,
        num_layers: int = 8,
        num_classes: int | None = None,
        dropout: float = 0.2,
        backend: str = "auto",
    ):
        super().__init__(in_channels, image_size, levels, hidden_channels, num_layers, num_classes)
        check_probability(dropout=dropout)
        h, g = hidden_channels, self.color_groups
        conv = dict(color_groups=g, backend=backend)
        self.input = MaskedConv2d(in_channels, h, 7, "A", **conv)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                MaskedConv2d(h, h // 2, 1, "B", **conv),
                nn.ReLU(),
                MaskedConv2d(h // 2, h // 2, 3, "B", **conv),
                nn.ReLU(),
                _dropout(dropout, backend),
                MaskedConv2d(h // 2, h, 1, "B", **conv),
            )
            for _ in range(num_layers)
        )
        self.output = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(h, h, 1, "B", **conv),
            nn.ReLU(),
            MaskedConv2d(h, in_channels * levels, 1, "B", **conv),
        )
        self.class_bias = nn.Embedding(num_classes, h) if num_classes else None

    def _net(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.input(to_unit(x, self.levels, self.input.weight.dtype))
        if self.class_bias is not None:
            h = h + self.class_bias(y)[:, :, None, None]
        for block in self.blocks:
            h = run_block(block, h, self.color_groups)
        return self.output(h)


class GatedPixelCNN(_Autoregressive):
    """Vertical and horizontal stacks with gated activations and no blind spot, skip
    connections into two 1x1 output layers; optional class conditioning. `dropout` acts
    on each layer's gated horizontal features (its default, 0.3, is what the 1000 training
    images of the digits need: without it the model overfits within 30 epochs)."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        levels: int = 17,
        hidden_channels: int = 64,
        num_layers: int = 6,
        num_classes: int | None = None,
        kernel_size: int = 3,
        dropout: float = 0.3,
        backend: str = "auto",
    ):
        super().__init__(in_channels, image_size, levels, hidden_channels, num_layers, num_classes)
        check_probability(dropout=dropout)
        h, g = hidden_channels, self.color_groups
        layer = dict(color_groups=g, num_classes=num_classes, dropout=dropout, backend=backend)
        self.layers = nn.ModuleList(
            [GatedPixelCNNLayer(in_channels, h, 7, first=True, **layer)]
            + [GatedPixelCNNLayer(h, h, kernel_size, **layer) for _ in range(num_layers - 1)]
        )
        conv = dict(color_groups=g, backend=backend)
        self.output = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(h, h, 1, "B", **conv),
            nn.ReLU(),
            MaskedConv2d(h, in_channels * levels, 1, "B", **conv),
        )

    def _net(self, x: Tensor, y: Tensor | None) -> Tensor:
        v = h = to_unit(x, self.levels, self.output[1].weight.dtype)
        skips = 0
        for layer in self.layers:
            v, h, skip = layer(v, h, y)
            skips = skips + skip
        return self.output(skips)
