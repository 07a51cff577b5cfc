"""PixelRNN's recurrent layers built on genmodels.ops.row_lstm and diagonal_lstm: each holds
the state-to-state weight and bias and maps input-to-state pre-activations to h."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genmodels.ops import _checks
from genmodels.ops.diagonal_lstm import diagonal_lstm
from genmodels.ops.row_lstm import row_lstm


class _PixelLSTM(nn.Module):
    def __init__(self, hidden_channels: int, kernel_size: int, bias: bool, device, dtype):
        super().__init__()
        _checks.check_positive_int(hidden_channels, "hidden_channels")
        self.hidden_channels = hidden_channels
        c = hidden_channels
        self.weight = nn.Parameter(torch.empty(4 * c, c, kernel_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(4 * c, device=device, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.LSTM's initialization, over the kernel's fan-in.
        bound = 1.0 / math.sqrt(self.weight.shape[1] * self.weight.shape[2])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class RowLSTM(_PixelLSTM):
    """`forward(gates_x)`: gates_x [B, 4C, H, W] (gates i, f, g, o) to h [B, C, H, W], each
    row's state computed from the row above through a 1-D convolution of `kernel_size`
    (odd) taps (genmodels.ops.row_lstm)."""

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int = 3,
        bias: bool = True,
        *,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        _checks.check_positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        super().__init__(hidden_channels, kernel_size, bias, device, dtype)
        self.backend = backend

    def forward(self, gates_x: Tensor) -> Tensor:
        return row_lstm(gates_x, self.weight, self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        return f"{self.hidden_channels}, kernel_size={self.weight.shape[2]}"


class DiagonalLSTM(_PixelLSTM):
    """`forward(gates_x)`: gates_x [B, 4C, H, W] to h [B, C, H, W] along the anti-diagonals,
    each state reading the state above and the one to its left (right with `reverse`)
    (genmodels.ops.diagonal_lstm)."""

    def __init__(
        self,
        hidden_channels: int,
        reverse: bool = False,
        bias: bool = True,
        *,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        _checks.check_bool(reverse, "reverse")
        super().__init__(hidden_channels, 2, bias, device, dtype)
        self.reverse = reverse
        self.backend = backend

    def forward(self, gates_x: Tensor) -> Tensor:
        return diagonal_lstm(
            gates_x, self.weight, self.bias, reverse=self.reverse, backend=self.backend
        )

    def extra_repr(self) -> str:
        return f"{self.hidden_channels}, reverse={self.reverse}"
