"""What the PixelRNN recurrences (row_lstm, diagonal_lstm) share: argument checks, the LSTM
cell of their references, the layout rules of their outputs and the fake kernels."""

from __future__ import annotations

import torch
from torch import Tensor

from genmodels.ops import _checks


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type the kernels compute and keep the cell state in."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cell(pre: Tensor, c_prev: Tensor | None) -> tuple[Tensor, Tensor]:
    """The LSTM cell on pre-activations [..., 4C, ...] along dim 1 (gates i, f, g, o):
    c = sigmoid(f) c_prev + sigmoid(i) tanh(g), h = sigmoid(o) tanh(c)."""
    i, f, g, o = pre.chunk(4, dim=1)
    c = torch.sigmoid(i) * torch.tanh(g)
    if c_prev is not None:
        c = c + torch.sigmoid(f) * c_prev
    return torch.sigmoid(o) * torch.tanh(c), c


def check_inputs(op: str, gates_x: object, weight: object, bias: object) -> int:
    """Checks the arguments every recurrence takes; returns the kernel size k."""
    _checks.check_floating(gates_x, "gates_x")
    if gates_x.dim() != 4:
        raise RuntimeError(f"{op}: gates_x must be 4-D [B, 4C, H, W], got {gates_x.dim()}-D")
    g = gates_x.shape[1]
    if g == 0 or g % 4:
        raise RuntimeError(
            f"{op}: gates_x must have 4C channels (gates i, f, g, o), a positive multiple of 4, "
            f"got {g}"
        )
    _checks.check_tensor(weight, "weight")
    if weight.device != gates_x.device:
        raise RuntimeError(f"{op}: weight is on {weight.device} but gates_x is on {gates_x.device}")
    if weight.dtype != gates_x.dtype:
        raise RuntimeError(
            f"{op}: weight has dtype {weight.dtype} but gates_x has dtype {gates_x.dtype}"
        )
    if weight.dim() != 3 or weight.shape[0] != g or weight.shape[1] != g // 4:
        raise RuntimeError(
            f"{op}: weight must be [{g}, {g // 4}, k] for gates_x with {g} channels, "
            f"got {list(weight.shape)}"
        )
    if bias is not None:
        _checks.check_like(bias, gates_x, f"{op}: bias", "gates_x", shape=(g,))
    return weight.shape[2]


def channels_last_out(gates_x: Tensor) -> bool:
    """Outputs are channels_last when gates_x is, and not also contiguous (the C++
    lstm_image_major applies the same rule)."""
    return gates_x.is_contiguous(memory_format=torch.channels_last) and not gates_x.is_contiguous()


def empty_image(gates_x: Tensor, channels: int) -> Tensor:
    b, _, h, w = gates_x.shape
    fmt = torch.channels_last if channels_last_out(gates_x) else torch.contiguous_format
    return torch.empty(
        b, channels, h, w, dtype=gates_x.dtype, device=gates_x.device, memory_format=fmt
    )


def fake_forward(gates_x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(h, h state, c state): the states [B, H, W, C] in the accumulation type."""
    b, g, h, w = gates_x.shape
    state = (b, h, w, g // 4)
    acc = acc_dtype(gates_x.dtype)
    return (
        empty_image(gates_x, g // 4),
        gates_x.new_empty(state, dtype=acc),
        gates_x.new_empty(state, dtype=acc),
    )


def fake_backward(gates_x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (
        empty_image(gates_x, gates_x.shape[1]),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
        weight.new_empty(weight.shape[0]),
    )


def no_double_backward(op: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{op}: double backward is not supported (its backward is a fused kernel); "
            "differentiate its gradient with backend='reference' instead"
        )

    return backward


def plain_tensors(*tensors) -> bool:
    """Only plain tensors and parameters (no other subclass) take the eager kernels; others
    go through the torch.library op, whose dispatch handles them."""
    return all(t is None or type(t) in (Tensor, torch.nn.Parameter) for t in tensors)
