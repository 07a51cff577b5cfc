"""The Row LSTM recurrence of PixelRNN (van den Oord et al. 2016a) as one fused op.

    h = row_lstm(gates_x, weight, bias)

gates_x [B, 4C, H, W] are the input-to-state pre-activations (gate order i, f, g, o, each
C channels, as torch.nn.LSTM), weight [4C, C, k] (odd k) and bias [4C] or None the
state-to-state 1-D convolution along a row. Row by row, with zero state above row 0:

    pre_r = gates_x[:, :, r] + conv1d(h_{r-1}, weight, bias, padding=k // 2)
    c_r   = sigmoid(f) * c_{r-1} + sigmoid(i) * tanh(g)
    h_r   = sigmoid(o) * tanh(c_r)

so the cell state of column j continues from column j of the row above. h is [B, C, H, W]
in gates_x's dtype (channels_last when gates_x is); the kernels compute and keep the
cell state in float32 (float64 for float64 inputs).

Backward runs the recurrence in reverse through fused kernels that keep only h and c from
the forward pass and recompute each row's gates (one GEMM a row) rather than storing them
(4C values a position instead of 2C). It is not differentiable again: double backward
raises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _lstm

OP = "row_lstm"


# --- reference: the spec -----------------------------------------------------------------


def row_lstm_reference(gates_x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The recurrence as a plain loop over rows (differentiable by autograd to any order)."""
    acc = _lstm.acc_dtype(gates_x.dtype)
    gx, w = gates_x.to(acc), weight.to(acc)
    b = None if bias is None else bias.to(acc)
    k = weight.shape[-1]
    h = c = None
    rows = []
    for r in range(gx.shape[2]):
        pre = gx[:, :, r, :]
        if h is not None:
            pre = pre + F.conv1d(h, w, b, padding=k // 2)
        elif b is not None:
            pre = pre + b[:, None]
        h, c = _lstm.cell(pre, c)
        rows.append(h)
    if not rows:
        return _lstm.empty_image(gates_x, gates_x.shape[1] // 4).zero_()
    return torch.stack(rows, dim=2).to(gates_x.dtype)


# --- kernels behind one torch.library op --------------------------------------------------


def _forward_kernel(gates_x, weight, bias, backend):
    if backend == "triton":
        from genkernels import row_lstm as kernels

        return kernels.forward(gates_x, weight, bias)
    return _backend.native_entry(OP, "forward", gates_x.device)(gates_x, weight, bias)


def _backward_kernel(grad_h, gates_x, weight, bias, h, c, backend):
    if backend == "triton":
        from genkernels import row_lstm as kernels

        return kernels.backward(grad_h, gates_x, weight, bias, h, c)
    entry = _backend.native_entry(OP, "backward", gates_x.device)
    return entry(grad_h, gates_x, weight, bias, h, c)


@torch.library.custom_op("genmodels::row_lstm", mutates_args=())
def _op(
    gates_x: Tensor, weight: Tensor, bias: Tensor | None, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return _forward_kernel(gates_x, weight, bias, backend)


@_op.register_fake
def _(gates_x, weight, bias, backend):
    return _lstm.fake_forward(gates_x)


@torch.library.custom_op("genmodels::row_lstm_backward", mutates_args=())
def _backward_op(
    grad_h: Tensor,
    gates_x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    h: Tensor,
    c: Tensor,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    return _backward_kernel(grad_h, gates_x, weight, bias, h, c, backend)


@_backward_op.register_fake
def _(grad_h, gates_x, weight, bias, h, c, backend):
    return _lstm.fake_backward(gates_x, weight)


_backward_op.register_autograd(_lstm.no_double_backward(OP))


def _setup_context(ctx, inputs, output):
    gates_x, weight, bias, backend = inputs
    _, h, c = output
    ctx.save_for_backward(gates_x, weight, bias, h, c)
    ctx.backend = backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad_h, _grad_h_state, _grad_c_state):
    gates_x, weight, bias, h, c = ctx.saved_tensors
    grad_gx, grad_w, grad_b = _backward_op(grad_h, gates_x, weight, bias, h, c, ctx.backend)
    return grad_gx, grad_w, grad_b if ctx.has_bias else None, None


_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's kernels for eager calls, without the torch.library dispatch; torch.compile
    traces the op instead."""

    @staticmethod
    def forward(ctx, gates_x, weight, bias, backend):
        h, h_state, c_state = _forward_kernel(gates_x, weight, bias, backend)
        ctx.save_for_backward(gates_x, weight, bias, h_state, c_state)
        ctx.backend, ctx.has_bias = backend, bias is not None
        return h

    @staticmethod
    def backward(ctx, grad_h):
        if torch.is_grad_enabled():
            _lstm.no_double_backward(OP)(ctx)
        gates_x, weight, bias, h, c = ctx.saved_tensors
        grad_gx, grad_w, grad_b = _backward_kernel(grad_h, gates_x, weight, bias, h, c, ctx.backend)
        return grad_gx, grad_w, grad_b if ctx.has_bias else None, None


# --- the public function ------------------------------------------------------------------


def check_args(gates_x, weight, bias) -> None:
    k = _lstm.check_inputs(OP, gates_x, weight, bias)
    if k % 2 == 0:
        raise RuntimeError(f"{OP}: weight's kernel size k (its last dim) must be odd, got {k}")


def row_lstm(
    gates_x: Tensor, weight: Tensor, bias: Tensor | None = None, *, backend: str = "auto"
) -> Tensor:
    """The Row LSTM over the rows of gates_x; returns h [B, C, H, W] (see the module doc).

    Args:
        gates_x: [B, 4C, H, W] input-to-state pre-activations, gates i, f, g, o.
        weight: [4C, C, k], odd k: the state-to-state convolution over the row above.
        bias: [4C] or None.
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).
    """
    check_args(gates_x, weight, bias)
    which = _backend.resolve(backend, OP, gates_x.device)
    if which == "reference":
        return row_lstm_reference(gates_x, weight, bias)
    if torch.compiler.is_compiling() or not _lstm.plain_tensors(gates_x, weight, bias):
        return _op(gates_x, weight, bias, which)[0]
    return _Eager.apply(gates_x, weight, bias, which)
