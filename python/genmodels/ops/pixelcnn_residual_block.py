"""PixelCNN's residual block as one op:

    out = x + conv_3(dropout(relu(conv_2(relu(conv_1(relu(x)))))))

conv_1 is a 1x1 convolution C -> C2 (`w1` [C2, C, 1, 1], `b1`), conv_2 a k x k masked
convolution C2 -> C2 (`w2` [C2, C2, k, k], `b2`), conv_3 a 1x1 convolution C2 -> C (`w3`
[C, C2, 1, 1], `b3`); all three are `masked_conv2d` with mask "B" and the same
`color_groups` (so the 1x1s are masked at their centre for RGB). This is exactly
`genmodels.models.PixelCNN`'s block: ReLU, 1x1, ReLU, masked k x k, ReLU, dropout, 1x1, plus
the input.

Dropout is `genmodels.ops.dropout`'s: the seed is drawn from `generator` at the same point
and under the same conditions (training, 0 < p, a non-empty x), and element i of
relu(conv_2(...)) in channels_last memory order is dropped iff dropout drops element i of a
tensor in that layout for that seed, which is the layout the native and Triton
masked_conv2d return. So a model that switches between this op and the layer-by-layer block
on those backends draws the same masks. Eval mode (`training=False`) and p == 0 are no
dropout; p == 1 zeroes the branch (x * 0, like the dropout op).

Kernels: on CPU and CUDA the native backend runs the two 1x1 convolutions as GEMMs over the
N * H * W pixel rows, the middle one with masked_conv2d's kernels, and fuses ReLU, dropout
and the residual add into the passes around them, under one C++ autograd node. Saved for
backward: x, the weights, r1 = relu(conv_1(relu(x))) and d = dropout(relu(conv_2(r1)))
(what the layer-by-layer block's last convolution saves anyway); relu(x) is recomputed, and
the middle ReLU's and the dropout's masks are read off d (0 exactly where either zeroed an
element), so backward draws no dropout words. Triton runs the same plan with its
masked_conv2d kernels and a fused ReLU + dropout kernel. Output channels_last.

Like masked_conv2d, a non-finite input or weight goes to the reference in eager calls when
a kernel reads masked positions with zero weights (0 * NaN would leak across the mask): a
colour-group centre, or the middle convolution's bounding-box path; the gather paths read
the kept taps only and skip the check;
under torch.compile the op is traced as is, as masked_conv2d's is. Finite inputs whose
intermediates overflow to Inf (float16) are not detected. Backward is
differentiable again (create_graph=True) through the reference on the torch.library op and
the Triton backend; the native eager node refuses create_graph=True with an error.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _checks
from genmodels.ops._graph_grads import reference_grads
from genmodels.ops._philox import draw_seed, dropout_threshold, seed_words
from genmodels.ops.dropout import dropout_reference, dropout_scale
from genmodels.ops.masked_conv2d import (
    _autocast,
    _kernel_reads_masked,
    check_color_groups,
    check_kernel_size,
    masked_conv2d_reference,
    tap_plan,
)

OP = "pixelcnn_residual_block"
_CL = torch.channels_last


# --- reference: the spec -----------------------------------------------------------------


def pixelcnn_residual_block_reference(x, w1, b1, w2, b2, w3, b3, seed, p, color_groups=1):
    """The block layer by layer in plain PyTorch (differentiable to any order). `seed` is
    the dropout's int64 [2] (seed, offset), or None for no dropout."""
    g = color_groups
    h = masked_conv2d_reference(torch.relu(x), w1, b1, "B", g)
    h = torch.relu(masked_conv2d_reference(torch.relu(h), w2, b2, "B", g))
    if seed is not None:
        h = dropout_reference(h.contiguous(memory_format=_CL), seed, p)
    elif p >= 1.0:
        h = h * 0
    return x + masked_conv2d_reference(h, w3, b3, "B", g)


# --- kernels behind one torch.library op --------------------------------------------------


def _plan(w1, w2, w3, color_groups):
    """(taps of w2, centre masks of w1, w2, w3 or None), as masked_conv2d's kernels take."""
    _, cm1 = tap_plan(w1, "B", color_groups)
    taps, cm2 = tap_plan(w2, "B", color_groups)
    _, cm3 = tap_plan(w3, "B", color_groups)
    return taps, cm1, cm2, cm3


def _seed_words(seed: Tensor | None) -> tuple[int, int]:
    # The int64 words themselves: pybind11 takes int64_t, and C++ reads them as uint64.
    return (0, 0) if seed is None else tuple(seed.tolist())


def _triton_drop(seed: Tensor | None, p: float):
    """The Triton kernels' dropout: None, or (seed, offset, threshold, scale)."""
    if p == 0.0:
        return None
    if p >= 1.0:  # every element dropped: x * 0
        return 0, 0, dropout_threshold(1.0), 0.0
    return (*seed_words(seed), dropout_threshold(p), dropout_scale(p))


def _forward_kernel(x, w1, b1, w2, b2, w3, b3, seed, p, color_groups, backend):
    taps, cm1, cm2, cm3 = _plan(w1, w2, w3, color_groups)
    if backend == "triton":
        from genkernels import pixelcnn_residual_block as kernels

        drop = _triton_drop(seed, p)
        return kernels.forward(x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, drop)
    s, o = _seed_words(seed)
    entry = _backend.native_entry(OP, "forward", x.device)
    return entry(x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, p, s, o)


def _backward_kernel(grad, x, w1, w2, w3, r1, r2, seed, p, color_groups, backend, need):
    taps, cm1, cm2, cm3 = _plan(w1, w2, w3, color_groups)
    if backend == "triton":
        from genkernels import pixelcnn_residual_block as kernels

        drop = _triton_drop(seed, p)
        return kernels.backward(grad, x, w1, w2, w3, r1, r2, taps, cm1, cm2, cm3, drop, need)
    s, o = _seed_words(seed)
    entry = _backend.native_entry(OP, "backward", x.device)
    return entry(grad, x, w1, w2, w3, r1, r2, taps, cm1, cm2, cm3, p, s, o, need)


def _dropout_p(seed: Tensor | None, p: float) -> float:
    """The p the kernels apply: 0 without a seed (eval, p == 0), except p == 1."""
    return p if seed is not None or p >= 1.0 else 0.0


@torch.library.custom_op("genmodels::pixelcnn_residual_block", mutates_args=())
def _op(
    x: Tensor,
    w1: Tensor,
    b1: Tensor | None,
    w2: Tensor,
    b2: Tensor | None,
    w3: Tensor,
    b3: Tensor | None,
    seed: Tensor | None,
    p: float,
    color_groups: int,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """(out, r1, d): r1 and d are what backward needs (not part of the public result)."""
    out, r1, r2 = _forward_kernel(
        x, w1, b1, w2, b2, w3, b3, seed, _dropout_p(seed, p), color_groups, backend
    )
    return out, r1, r2


@_op.register_fake
def _(x, w1, b1, w2, b2, w3, b3, seed, p, color_groups, backend):
    n, c, h, w = x.shape
    c2 = w1.shape[0]
    like = dict(dtype=x.dtype, device=x.device, memory_format=_CL)
    return (
        torch.empty((n, c, h, w), **like),
        torch.empty((n, c2, h, w), **like),
        torch.empty((n, c2, h, w), **like),
    )


@torch.library.custom_op("genmodels::pixelcnn_residual_block_backward", mutates_args=())
def _backward_op(
    grad: Tensor,
    x: Tensor,
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
    r1: Tensor,
    r2: Tensor,
    seed: Tensor | None,
    p: float,
    color_groups: int,
    backend: str,
    need: list[bool],
) -> list[Tensor]:
    grads = _backward_kernel(
        grad, x, w1, w2, w3, r1, r2, seed, _dropout_p(seed, p), color_groups, backend, need
    )
    # A custom op returns tensors only: the gradients not asked for come back empty.
    return [g if g is not None else x.new_empty(0) for g in grads]


@_backward_op.register_fake
def _(grad, x, w1, w2, w3, r1, r2, seed, p, color_groups, backend, need):
    b_shapes = [(w1.shape[0],), (w2.shape[0],), (x.shape[1],)]
    shapes = [x.shape, w1.shape, b_shapes[0], w2.shape, b_shapes[1], w3.shape, b_shapes[2]]
    out = []
    for i, (wanted, shape) in enumerate(zip(need, shapes, strict=True)):
        if not wanted:
            out.append(x.new_empty(0))
        elif i == 0:
            out.append(torch.empty_like(x, memory_format=_CL))
        else:
            out.append(x.new_empty(shape))
    return out


def _setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, w3, b3, seed, p, color_groups, backend = inputs
    _, r1, r2 = output
    ctx.mark_non_differentiable(r1, r2)
    ctx.save_for_backward(x, w1, b1, w2, b2, w3, b3, seed, r1, r2)
    ctx.p, ctx.color_groups, ctx.backend = p, color_groups, backend


def _needs(ctx) -> list[bool]:
    x, w1, b1, w2, b2, w3, b3 = ctx.saved_tensors[:7]
    tensors = (x, w1, b1, w2, b2, w3, b3)
    return [t is not None and bool(ctx.needs_input_grad[i]) for i, t in enumerate(tensors)]


def _grads(ctx, grad_out, backward):
    x, w1, b1, w2, b2, w3, b3, seed, r1, r2 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: gradients through the reference
        return reference_grads(
            ctx,
            lambda *t: pixelcnn_residual_block_reference(*t, seed, ctx.p, ctx.color_groups),
            (x, w1, b1, w2, b2, w3, b3),
            grad_out,
        )
    need = _needs(ctx)
    if not any(need):
        return [None] * 7
    grads = backward(
        grad_out, x, w1, w2, w3, r1, r2, seed, ctx.p, ctx.color_groups, ctx.backend, need
    )
    return [g if wanted else None for g, wanted in zip(grads, need, strict=True)]


def _backward(ctx, grad_out, _grad_r1, _grad_r2):
    return (*_grads(ctx, grad_out, _backward_op), None, None, None, None)


_op.register_autograd(_backward, setup_context=_setup_context)


def _eager_backward_kernel(grad, x, w1, w2, w3, r1, r2, seed, p, color_groups, backend, need):
    return _backward_kernel(
        grad, x, w1, w2, w3, r1, r2, seed, _dropout_p(seed, p), color_groups, backend, need
    )


class _Eager(torch.autograd.Function):
    """The Triton kernels without the torch.library dispatch and autograd wrapper."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, w3, b3, seed, p, color_groups, backend):
        inputs = (x, w1, b1, w2, b2, w3, b3, seed, p, color_groups, backend)
        out, r1, r2 = _forward_kernel(
            x, w1, b1, w2, b2, w3, b3, seed, _dropout_p(seed, p), color_groups, backend
        )
        _setup_context(ctx, inputs, (out, r1, r2))
        return out, r1, r2

    @staticmethod
    def backward(ctx, grad_out, _grad_r1, _grad_r2):
        return (*_grads(ctx, grad_out, _eager_backward_kernel), None, None, None, None)


# --- the public function ------------------------------------------------------------------


def _check_args(x, w1, b1, w2, b2, w3, b3, p, training, generator, color_groups):
    _checks.check_floating(x, "x")
    if x.dim() != 4:
        raise RuntimeError(f"x must be a 4-D [N, C, H, W] tensor, got shape {list(x.shape)}")
    c = x.shape[1]
    for t, name in ((w1, "w1"), (w2, "w2"), (w3, "w3")):
        _checks.check_tensor(t, name)
        if t.dim() != 4:
            raise RuntimeError(f"{name} must be a 4-D tensor, got shape {list(t.shape)}")
    c2 = w1.shape[0]
    if c2 < 1 or c < 1:
        raise ValueError(f"w1 must have input and output channels, got {list(w1.shape)}")
    _checks.check_like(w1, x, "w1", "x", shape=(c2, c, 1, 1))
    k = w2.shape[-1]
    check_kernel_size(k, "w2's kernel size")
    _checks.check_like(w2, x, "w2", "x", shape=(c2, c2, k, k))
    _checks.check_like(w3, x, "w3", "x", shape=(c, c2, 1, 1))
    for b, name, n in ((b1, "b1", c2), (b2, "b2", c2), (b3, "b3", c)):
        if b is not None:
            _checks.check_like(b, x, name, "x", shape=(n,))
    check_color_groups(color_groups, channels=c, hidden_channels=c2)
    p = _checks.check_unit_interval(p, "p")
    _checks.check_bool(training, "training")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != x.device.type:
            raise RuntimeError(f"generator is on {generator.device} but x is on {x.device}")
    return p


def _non_finite(x: Tensor, *params: Tensor | None) -> bool:
    """Whether x or a parameter holds a NaN or Inf: one reduction over x and one over the
    (small) parameters concatenated, as a per-tensor check costs ~80 us each at 8x8."""
    flat = torch.cat([t.reshape(-1) for t in params if t is not None])
    total = flat.sum(dtype=torch.float64 if flat.dtype == torch.float64 else torch.float32)
    if x.numel():
        total = total + x.sum(dtype=total.dtype)
    # A sum that only overflows sends a finite input to the exact (slower) reference.
    return not bool(torch.isfinite(total))


def pixelcnn_residual_block(
    x: Tensor,
    w1: Tensor,
    b1: Tensor | None,
    w2: Tensor,
    b2: Tensor | None,
    w3: Tensor,
    b3: Tensor | None,
    *,
    p: float = 0.0,
    training: bool = True,
    generator: torch.Generator | None = None,
    color_groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """PixelCNN's residual block (see the module docstring for the exact computation).

    Args:
        x: [N, C, H, W] input (any layout; the kernels return channels_last).
        w1, b1: the first 1x1 convolution, [C2, C, 1, 1] and [C2] or None.
        w2, b2: the masked k x k convolution (mask B), [C2, C2, k, k] with k odd, [C2] or None.
        w3, b3: the last 1x1 convolution, [C, C2, 1, 1] and [C] or None.
        p: dropout probability in [0, 1] before the last convolution.
        training: with False (eval) there is no dropout.
        generator: where dropout's (seed, offset) is drawn from, as for genmodels.ops.dropout.
        color_groups: colour groups of every convolution's centre (3 for RGB).
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).
    """
    x, w1, b1, w2, b2, w3, b3 = _autocast(x, w1, b1, w2, b2, w3, b3)
    p = _check_args(x, w1, b1, w2, b2, w3, b3, p, training, generator, color_groups)
    which = _backend.resolve(backend, OP, x.device)
    # The seed as the dropout op draws it: only when it would drop something.
    drops = training and 0.0 < p < 1.0 and x.numel() > 0
    seed = draw_seed(generator) if drops else None
    p = p if training else 0.0
    args = (x, w1, b1, w2, b2, w3, b3, seed, p, color_groups)
    if which == "reference":
        return pixelcnn_residual_block_reference(*args)
    if torch.compiler.is_compiling():  # traced as one op, as masked_conv2d is
        return _op(*args, which)[0]
    # Only kernels that read masked positions need the check: a colour-group centre, or a
    # middle convolution whose CPU path covers the kept taps' bounding box.
    reads_masked = _kernel_reads_masked(x, w2, "B", color_groups, which)
    if reads_masked and _non_finite(x, w1, b1, w2, b2, w3, b3):
        return pixelcnn_residual_block_reference(*args)
    if which == "native":
        taps, cm1, cm2, cm3 = _plan(w1, w2, w3, color_groups)
        s, o = _seed_words(seed)
        entry = _backend.native_entry(OP, "autograd", x.device)
        return entry(x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, _dropout_p(seed, p), s, o)
    return _Eager.apply(*args, which)[0]
