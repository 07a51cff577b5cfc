"""PixelCNN and Gated PixelCNN layers built on genmodels.ops.masked_conv2d."""

from __future__ import annotations

from torch import Tensor, nn

from genmodels.nn.dropout import Dropout
from genmodels.ops import _checks
from genmodels.ops.masked_conv2d import (
    check_color_groups,
    check_kernel_size,
    check_mask_type,
    gate,
    masked_conv2d,
    masked_conv2d_gated,
)


def _square_kernel(kernel_size) -> int:
    if isinstance(kernel_size, (tuple, list)):
        if len(kernel_size) != 2 or kernel_size[0] != kernel_size[1]:
            raise ValueError(f"kernel_size must be an int or a square pair, got {kernel_size}")
        kernel_size = kernel_size[0]
    return check_kernel_size(kernel_size)


class MaskedConv2d(nn.Conv2d):
    """A causally masked `nn.Conv2d` (stride 1, padding k // 2).

    Same parameters, `state_dict` and `repr` as `nn.Conv2d(in_channels, out_channels,
    kernel_size, padding=kernel_size // 2, bias=bias)`, so a state_dict saved from a plain
    convolution of the same shape loads into it. The weight keeps every tap; the masked
    ones are ignored in forward and get zero gradient. See genmodels.ops.masked_conv2d
    for `mask_type` ("A", "B", "VA", "VB", "HA", "HB") and `color_groups`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        mask_type: str = "B",
        color_groups: int = 1,
        bias: bool = True,
        *,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        k = _square_kernel(kernel_size)
        _checks.check_positive_int(in_channels, "in_channels")
        _checks.check_positive_int(out_channels, "out_channels")
        check_mask_type(mask_type)
        check_color_groups(color_groups, in_channels=in_channels, out_channels=out_channels)
        super().__init__(
            in_channels, out_channels, k, padding=k // 2, bias=bias, device=device, dtype=dtype
        )
        self.mask_type = mask_type
        self.color_groups = color_groups
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return masked_conv2d(
            x,
            self.weight,
            self.bias,
            mask_type=self.mask_type,
            color_groups=self.color_groups,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, mask_type={self.mask_type!r}, "
            f"color_groups={self.color_groups}"
        )


class GatedPixelCNNLayer(nn.Module):
    """One layer of Gated PixelCNN (van den Oord et al. 2016), without blind spot.

    `forward(v, h, y=None) -> (v, h, skip)`:
      v_pre = conv_V(v) + cond_v(y)                   (k x k, taps "VA" first / "VB" after)
      v     = tanh(v_pre_a) * sigmoid(v_pre_b)
      h_g   = gate(conv_H(h) + 1x1(v_pre) + cond_h(y)) (taps "HA" first / "HB" after; fused)
      skip  = 1x1(dropout(h_g))
      h     = h + 1x1(dropout(h_g))                   (residual; the first layer has none)
    The vertical stack only ever sees rows strictly above the pixel (VA excludes the
    current row, VB only mixes rows of features that already exclude it), so feeding
    v_pre into the horizontal stack needs no down-shift. The horizontal stack sees the
    current row to the left (and the pixel itself after the first layer, ordered by
    colour groups). The 1x1 convolutions of the horizontal stack are mask-"B" 1x1 masked
    convolutions, so colour groups stay ordered. `num_classes` adds a learned per-class
    bias to both stacks (class-conditional PixelCNN). Gated channels pair up per colour
    group (see genmodels.ops.masked_conv2d_gated).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int = 3,
        *,
        first: bool = False,
        color_groups: int = 1,
        num_classes: int | None = None,
        residual: bool = True,
        dropout: float = 0.0,
        backend: str = "auto",
    ):
        super().__init__()
        k = _square_kernel(kernel_size)
        _checks.check_probability(dropout, "dropout")
        _checks.check_positive_int(channels, "channels")
        check_color_groups(color_groups, in_channels=in_channels, channels=channels)
        self.first, self.color_groups, self.backend = first, color_groups, backend
        self.residual = residual and not first and in_channels == channels
        v_mask, h_mask = ("VA", "HA") if first else ("VB", "HB")
        conv = dict(color_groups=color_groups, backend=backend)
        self.conv_v = MaskedConv2d(in_channels, 2 * channels, k, v_mask, **conv)
        self.conv_h = MaskedConv2d(in_channels, 2 * channels, k, h_mask, **conv)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", **conv)
        self.skip = MaskedConv2d(channels, channels, 1, "B", **conv)
        # Per-element dropout keeps the causal structure (it never mixes positions).
        self.dropout = Dropout(dropout, backend=backend) if dropout > 0 else nn.Identity()
        self.cond_v = self.cond_h = None
        if num_classes is not None:
            _checks.check_positive_int(num_classes, "num_classes")
            self.cond_v = nn.Embedding(num_classes, 2 * channels)
            self.cond_h = nn.Embedding(num_classes, 2 * channels)
            nn.init.zeros_(self.cond_v.weight)
            nn.init.zeros_(self.cond_h.weight)

    def _cond(self, table: nn.Embedding | None, y: Tensor | None) -> Tensor | None:
        if table is None:
            return None
        if y is None:
            raise ValueError("this layer is class-conditional: pass the labels y")
        return table(y)[:, :, None, None]

    def forward(
        self, v: Tensor, h: Tensor, y: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        v_pre = self.conv_v(v)
        cond_v = self._cond(self.cond_v, y)
        if cond_v is not None:
            v_pre = v_pre + cond_v
        v_new = gate(v_pre, self.color_groups, backend=self.backend)
        addend = self.v_to_h(v_pre)
        cond_h = self._cond(self.cond_h, y)
        if cond_h is not None:
            addend = addend + cond_h
        h_gated = masked_conv2d_gated(
            h,
            self.conv_h.weight,
            self.conv_h.bias,
            addend,
            mask_type=self.conv_h.mask_type,
            color_groups=self.color_groups,
            backend=self.backend,
        )
        h_gated = self.dropout(h_gated)
        skip = self.skip(h_gated)
        h_new = self.h_out(h_gated)
        if self.residual:
            h_new = h_new + h
        return v_new, h_new, skip


__all__ = ["GatedPixelCNNLayer", "MaskedConv2d"]
