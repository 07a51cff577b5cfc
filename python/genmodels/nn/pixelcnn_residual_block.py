"""PixelCNN's residual block as a drop-in layer on genmodels.ops.pixelcnn_residual_block,
and the test that decides when a layer-by-layer block may run as the fused op."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules import module as module_mod

from genmodels.nn.dropout import Dropout
from genmodels.nn.masked_conv2d import MaskedConv2d
from genmodels.ops.pixelcnn_residual_block import pixelcnn_residual_block

# The modules of a block, in order; None is the dropout slot (Dropout or Identity).
BLOCK_KINDS = (nn.ReLU, MaskedConv2d, nn.ReLU, MaskedConv2d, nn.ReLU, None, MaskedConv2d)


def _parametrized(module: nn.Module) -> bool:
    # parametrize.is_parametrized(module), without its getattr: a missing attribute goes
    # through Module.__getattr__ and an AttributeError, ~2 us on each of the 64 modules a
    # PixelCNN forward checks. register_parametrization keeps the ModuleDict in _modules.
    found = module._modules.get("parametrizations")
    return isinstance(found, nn.ModuleDict) and len(found) > 0


def _plain(module: nn.Module) -> bool:
    """No hooks, no parametrization, plain tensors: its forward is its class's forward."""
    if module._forward_hooks or module._forward_pre_hooks or _parametrized(module):
        return False
    params = [t for t in module._parameters.values() if t is not None]
    return all(type(t) in (Tensor, nn.Parameter) for t in params)


def fused_block_parts(block: nn.Module, color_groups: int):
    """(the three convolutions, the Dropout or None) when the fused op computes exactly what
    `block`'s modules compute (ReLU, 1x1, ReLU, masked k x k, ReLU, dropout, 1x1, all mask
    B with `color_groups`), else None: a subclass, a replaced module, a hook, a
    parametrization or a tensor subclass runs layer by layer."""
    if type(block) not in (nn.Sequential, PixelCNNResidualBlock) or len(block) != len(BLOCK_KINDS):
        return None
    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return None
    if not _plain(block):
        return None
    for m, kind in zip(block, BLOCK_KINDS, strict=True):
        ok = type(m) in (Dropout, nn.Identity) if kind is None else type(m) is kind
        if not ok or not _plain(m):
            return None
    convs = (block[1], block[3], block[6])
    k = convs[1].kernel_size[0]
    for conv, size in zip(convs, (1, k, 1), strict=True):
        if conv.mask_type != "B" or conv.color_groups != color_groups:
            return None
        if conv.kernel_size != (size, size) or conv.padding != (size // 2, size // 2):
            return None
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            return None
        if conv.padding_mode != "zeros":
            return None
    if len({conv.backend for conv in convs}) != 1:
        return None
    drop = block[5] if type(block[5]) is Dropout else None
    if drop is not None and drop.backend != convs[0].backend:
        return None
    return convs, drop


def run_block(block: nn.Module, x: Tensor, color_groups: int) -> Tensor:
    """x + block(x): the fused op when `fused_block_parts` allows it, else layer by layer."""
    parts = fused_block_parts(block, color_groups)
    if parts is None:
        # A PixelCNNResidualBlock is already inside its own __call__ (its hooks ran).
        inner = (
            nn.Sequential.forward(block, x)
            if isinstance(block, PixelCNNResidualBlock)
            else block(x)
        )
        return x + inner
    (c1, c2, c3), drop = parts
    return pixelcnn_residual_block(
        x, c1.weight, c1.bias, c2.weight, c2.bias, c3.weight, c3.bias,
        p=drop.p if drop is not None else 0.0, training=drop is not None and drop.training,
        color_groups=color_groups, backend=c1.backend,
    )  # fmt: skip


class PixelCNNResidualBlock(nn.Sequential):
    """PixelCNN's residual block, `x + block(x)` with block = ReLU, 1x1 (channels ->
    hidden), ReLU, masked k x k mask B, ReLU, dropout, 1x1 (hidden -> channels), all with
    `color_groups`. The same modules (and state_dict keys "1.weight", ...) as the
    nn.Sequential of `genmodels.models.PixelCNN`; forward runs the fused op
    `genmodels.ops.pixelcnn_residual_block` unless a module was replaced, hooked or
    parametrized."""

    def __init__(
        self,
        channels: int,
        hidden_channels: int | None = None,
        kernel_size: int = 3,
        dropout: float = 0.0,
        color_groups: int = 1,
        bias: bool = True,
        backend: str = "auto",
    ):
        hidden = channels // 2 if hidden_channels is None else hidden_channels
        conv = dict(color_groups=color_groups, bias=bias, backend=backend)
        super().__init__(
            nn.ReLU(),
            MaskedConv2d(channels, hidden, 1, "B", **conv),
            nn.ReLU(),
            MaskedConv2d(hidden, hidden, kernel_size, "B", **conv),
            nn.ReLU(),
            Dropout(dropout, backend=backend) if dropout > 0 else nn.Identity(),
            MaskedConv2d(hidden, channels, 1, "B", **conv),
        )
        self.color_groups = color_groups

    def forward(self, x: Tensor) -> Tensor:
        return run_block(self, x, self.color_groups)
