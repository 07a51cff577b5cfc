"""The Diagonal LSTM recurrence of PixelRNN (van den Oord et al. 2016a) as one fused op.

    h = diagonal_lstm(gates_x, weight, bias, reverse=False)

gates_x [B, 4C, H, W] are the input-to-state pre-activations (gate order i, f, g, o, each
C channels), weight [4C, C, 2] and bias [4C] or None the state-to-state convolution. The
paper's 2 x 1 column convolution on the skewed map is, in image coordinates: the state at
(r, j) reads the state directly above, (r - 1, j), through weight[:, :, 0] and the state to
its left, (r, j - 1), through weight[:, :, 1] (zero outside the image), and its cell state
continues from the left neighbour (r, j - 1):

    pre = gates_x[:, :, r, j] + W0 h(r - 1, j) + W1 h(r, j - 1) + bias
    c(r, j) = sigmoid(f) * c(r, j - 1) + sigmoid(i) * tanh(g),  h = sigmoid(o) * tanh(c)

reverse=True mirrors it left-right: the state reads above and right, and its cell state
continues from the right. The kernels run one anti-diagonal (the skewed map's column) per
step; the skew and the mirror are index arithmetic, no skewed or flipped copy is built.
h is [B, C, H, W] in gates_x's dtype (channels_last when gates_x is); the cell state is
kept in float32 (float64 for float64 inputs).

Backward keeps only h and c from the forward pass and recomputes each step's gates (one
GEMM a step) rather than storing them (4C values a position instead of 2C). It is not
differentiable again: double backward raises.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _lstm

OP = "diagonal_lstm"


# --- reference: the spec -----------------------------------------------------------------


def diagonal_lstm_reference(
    gates_x: Tensor, weight: Tensor, bias: Tensor | None = None, *, reverse: bool = False
) -> Tensor:
    """The recurrence as a plain loop over positions in raster order (the left neighbour,
    or the right one under reverse, comes first), differentiable by autograd to any order."""
    acc = _lstm.acc_dtype(gates_x.dtype)
    gx, w = gates_x.to(acc), weight.to(acc)
    b = None if bias is None else bias.to(acc)
    _, _, height, width = gx.shape
    w_above, w_left = w[:, :, 0], w[:, :, 1]
    columns = range(width - 1, -1, -1) if reverse else range(width)
    previous = 1 if reverse else -1  # the column the state comes from along a row
    h = [[None] * width for _ in range(height)]
    c = [[None] * width for _ in range(height)]
    for r in range(height):
        for j in columns:
            pre = gx[:, :, r, j]
            if b is not None:
                pre = pre + b
            if r > 0:
                pre = pre + h[r - 1][j] @ w_above.t()
            jp = j + previous
            c_prev = None
            if 0 <= jp < width:
                pre = pre + h[r][jp] @ w_left.t()
                c_prev = c[r][jp]
            h[r][j], c[r][j] = _lstm.cell(pre, c_prev)
    if height == 0 or width == 0:
        return _lstm.empty_image(gates_x, gates_x.shape[1] // 4).zero_()
    return torch.stack([torch.stack(row, dim=-1) for row in h], dim=-2).to(gates_x.dtype)


# --- kernels behind one torch.library op --------------------------------------------------


def _forward_kernel(gates_x, weight, bias, reverse, backend):
    if backend == "triton":
        from genkernels import diagonal_lstm as kernels

        return kernels.forward(gates_x, weight, bias, reverse)
    return _backend.native_entry(OP, "forward", gates_x.device)(gates_x, weight, bias, reverse)


def _backward_kernel(grad_h, gates_x, weight, bias, h, c, reverse, backend):
    if backend == "triton":
        from genkernels import diagonal_lstm as kernels

        return kernels.backward(grad_h, gates_x, weight, bias, h, c, reverse)
    entry = _backend.native_entry(OP, "backward", gates_x.device)
    return entry(grad_h, gates_x, weight, bias, h, c, reverse)


@torch.library.custom_op("genmodels::diagonal_lstm", mutates_args=())
def _op(
    gates_x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return _forward_kernel(gates_x, weight, bias, reverse, backend)


@_op.register_fake
def _(gates_x, weight, bias, reverse, backend):
    return _lstm.fake_forward(gates_x)


@torch.library.custom_op("genmodels::diagonal_lstm_backward", mutates_args=())
def _backward_op(
    grad_h: Tensor,
    gates_x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    h: Tensor,
    c: Tensor,
    reverse: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    return _backward_kernel(grad_h, gates_x, weight, bias, h, c, reverse, backend)


@_backward_op.register_fake
def _(grad_h, gates_x, weight, bias, h, c, reverse, backend):
    return _lstm.fake_backward(gates_x, weight)


_backward_op.register_autograd(_lstm.no_double_backward(OP))


def _setup_context(ctx, inputs, output):
    gates_x, weight, bias, reverse, backend = inputs
    _, h, c = output
    ctx.save_for_backward(gates_x, weight, bias, h, c)
    ctx.reverse, ctx.backend = reverse, backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad_h, _grad_h_state, _grad_c_state):
    gates_x, weight, bias, h, c = ctx.saved_tensors
    grad_gx, grad_w, grad_b = _backward_op(
        grad_h, gates_x, weight, bias, h, c, ctx.reverse, ctx.backend
    )
    return grad_gx, grad_w, grad_b if ctx.has_bias else None, None, None


_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's kernels for eager calls, without the torch.library dispatch; torch.compile
    traces the op instead."""

    @staticmethod
    def forward(ctx, gates_x, weight, bias, reverse, backend):
        h, h_state, c_state = _forward_kernel(gates_x, weight, bias, reverse, backend)
        ctx.save_for_backward(gates_x, weight, bias, h_state, c_state)
        ctx.reverse, ctx.backend, ctx.has_bias = reverse, backend, bias is not None
        return h

    @staticmethod
    def backward(ctx, grad_h):
        if torch.is_grad_enabled():
            _lstm.no_double_backward(OP)(ctx)
        gates_x, weight, bias, h, c = ctx.saved_tensors
        grad_gx, grad_w, grad_b = _backward_kernel(
            grad_h, gates_x, weight, bias, h, c, ctx.reverse, ctx.backend
        )
        return grad_gx, grad_w, grad_b if ctx.has_bias else None, None, None


# --- the public function ------------------------------------------------------------------


def check_args(gates_x, weight, bias, reverse) -> None:
    k = _lstm.check_inputs(OP, gates_x, weight, bias)
    if k != 2:
        raise RuntimeError(
            f"{OP}: weight must be [4C, C, 2] (taps above and left), got kernel size {k}"
        )
    if not isinstance(reverse, bool):
        raise TypeError(f"{OP}: reverse must be a bool, got {type(reverse).__name__}")


def diagonal_lstm(
    gates_x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    reverse: bool = False,
    backend: str = "auto",
) -> Tensor:
    """The Diagonal LSTM over gates_x; returns h [B, C, H, W] (see the module doc).

    Args:
        gates_x: [B, 4C, H, W] input-to-state pre-activations, gates i, f, g, o.
        weight: [4C, C, 2]: weight[:, :, 0] reads the state above, weight[:, :, 1] the
            state to the left (to the right under reverse).
        bias: [4C] or None.
        reverse: mirror left-right (the right-to-left LSTM of the Diagonal BiLSTM).
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).
    """
    check_args(gates_x, weight, bias, reverse)
    which = _backend.resolve(backend, OP, gates_x.device)
    if which == "reference":
        return diagonal_lstm_reference(gates_x, weight, bias, reverse=reverse)
    if torch.compiler.is_compiling() or not _lstm.plain_tensors(gates_x, weight, bias):
        return _op(gates_x, weight, bias, reverse, which)[0]
    return _Eager.apply(gates_x, weight, bias, reverse, which)
