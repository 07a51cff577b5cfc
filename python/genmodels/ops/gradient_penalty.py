"""Fused gradient penalty: per-sample gradient norms and their penalty in one pass.

    n[b]       = || grads[b] ||_2            over every non-batch dim
    penalty[b] = (n[b] - target)**2          or max(0, n[b] - target)**2 when one-sided

The op reads `grads` once forward and once backward; the backward pass scales each
sample by one coefficient. The gradient of the norm at n = 0 is defined as 0, so a zero
gradient row gives a finite penalty (target**2) and a zero gradient.

The op is differentiable to any order with respect to `grads`: its backward is a second
op (`genmodels::gradient_penalty_backward`, same kernels) whose own backward is written in
differentiable PyTorch from the saved per-sample norms. When `grads` came from
`torch.autograd.grad(..., create_graph=True)` the penalty's gradient therefore reaches the
critic's parameters, exactly as the recipe `grads.flatten(1).norm(dim=1)` does.

Eager calls bypass the torch.library op, whose per-call overhead dominates small inputs:
on CPU tensors the native backend is one C++ autograd node (`_C.gradient_penalty_autograd_cpu`,
csrc/gradient_penalty/gradient_penalty_autograd_cpu.cpp) with the batch reduction folded into
its kernels; other eager calls go through `_EagerPenalty`, an autograd.Function over the same
kernels and derivatives. Both call the differentiable backward op under create_graph. Under
torch.compile the public function calls the torch.library op (fake kernel, registered
autograd), which opcheck tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _checks

OP = "gradient_penalty"


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_sample(t: Tensor) -> Tensor:
    """[B, cols] view (or copy) of t; works for B = 0 and for 1-d t."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def _row_view(v: Tensor, like: Tensor) -> Tensor:
    """v [B] viewed to broadcast against `like` [B, ...]."""
    return v.view(v.shape[0], *([1] * (like.dim() - 1)))


# --- reference: the spec -----------------------------------------------------------------


def gradient_penalty_reference(grads: Tensor, target: float, one_sided: bool) -> Tensor:
    """Per-sample penalty [B] in plain PyTorch (differentiable by autograd to any order)."""
    acc = _acc(grads.dtype)
    n = torch.linalg.vector_norm(_per_sample(grads).to(acc), dim=1)
    d = n - target
    if one_sided:
        d = d.clamp(min=0)
    return (d * d).to(grads.dtype)


# --- kernels behind two torch.library ops -------------------------------------------------


def _forward_kernels(grads: Tensor, target: float, one_sided: bool, backend: str):
    grads = _checks.dense_rows(grads)
    if backend == "triton":
        from genkernels import gradient_penalty as kernels

        return kernels.forward(grads, target, one_sided)
    forward = _backend.native_entry(OP, "forward", grads.device)
    return forward(grads, target, one_sided)


def _backward_kernels(grad_penalty, grad_norm, grads, norm, target, one_sided, backend):
    grads = _checks.dense_rows(grads)
    if backend == "triton":
        from genkernels import gradient_penalty as kernels

        return kernels.backward(grad_penalty, grad_norm, grads, norm, target, one_sided)
    backward = _backend.native_entry(OP, "backward", grads.device)
    return backward(grad_penalty, grad_norm, grads, norm, target, one_sided)


@torch.library.custom_op("genmodels::gradient_penalty", mutates_args=())
def _op(grads: Tensor, target: float, one_sided: bool, backend: str) -> tuple[Tensor, Tensor]:
    """(penalty [B] in grads' dtype, norm [B] in the accumulation dtype)."""
    return _forward_kernels(grads, target, one_sided, backend)


@_op.register_fake
def _(grads, target, one_sided, backend):
    rows = grads.shape[0]
    return grads.new_empty((rows,)), grads.new_empty((rows,), dtype=_acc(grads.dtype))


@torch.library.custom_op("genmodels::gradient_penalty_backward", mutates_args=())
def _backward_op(
    grad_penalty: Tensor,
    grad_norm: Tensor,
    grads: Tensor,
    norm: Tensor,
    target: float,
    one_sided: bool,
    backend: str,
) -> Tensor:
    """grads * coef[b], coef = (grad_penalty * d penalty / d n + grad_norm) / n (0 at n = 0)."""
    return _backward_kernels(grad_penalty, grad_norm, grads, norm, target, one_sided, backend)


@_backward_op.register_fake
def _(grad_penalty, grad_norm, grads, norm, target, one_sided, backend):
    return torch.empty_like(_checks.dense_rows(grads))


def _setup_context(ctx, inputs, output):
    grads, target, one_sided, backend = inputs
    ctx.save_for_backward(grads, output[1])
    ctx.target, ctx.one_sided, ctx.backend = target, one_sided, backend


def _grad_grads(grads, norm, grad_penalty, grad_norm, target, one_sided, backend, eager):
    if grad_penalty is None:
        grad_penalty = grads.new_zeros((grads.shape[0],))
    if grad_norm is None:
        grad_norm = torch.zeros_like(norm)
    if eager and not torch.is_grad_enabled():  # a plain backward: the kernels, no graph
        return _backward_kernels(grad_penalty, grad_norm, grads, norm, target, one_sided, backend)
    # create_graph=True (or tracing): the backward op, itself differentiable
    return _backward_op(grad_penalty, grad_norm, grads, norm, target, one_sided, backend)


def _backward(ctx, grad_penalty, grad_norm):
    grads, norm = ctx.saved_tensors
    grad_grads = _grad_grads(
        grads, norm, grad_penalty, grad_norm, ctx.target, ctx.one_sided, ctx.backend, False
    )
    return grad_grads, None, None, None


_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_backward_context(ctx, inputs, output):
    grad_penalty, grad_norm, grads, norm, target, one_sided, backend = inputs
    ctx.save_for_backward(grad_penalty, grad_norm, grads, norm)
    ctx.target, ctx.one_sided = target, one_sided


def _backward_backward(ctx, g_out):
    """Derivatives of grad_grads = grads * coef(grad_penalty, grad_norm, norm), in
    differentiable PyTorch (so every higher order works too)."""
    gp, gn, grads, n = ctx.saved_tensors
    acc = n.dtype
    nonzero = n != 0
    safe_n = torch.where(nonzero, n, torch.ones_like(n))
    d = n - ctx.target
    slope = torch.ones_like(n)  # d excess / d n
    if ctx.one_sided:
        slope = (d > 0).to(acc)
        d = d.clamp(min=0)
    gp_a = gp.to(acc)
    zero = torch.zeros_like(n)
    d_gp = d_gn = d_grads = d_norm = None
    if ctx.needs_input_grad[2]:
        coef = torch.where(nonzero, (2 * gp_a * d + gn) / safe_n, zero)
        d_grads = (g_out.to(acc) * _row_view(coef, g_out)).to(grads.dtype)
    if any(ctx.needs_input_grad[:2]) or ctx.needs_input_grad[3]:
        s = (_per_sample(g_out).to(acc) * _per_sample(grads).to(acc)).sum(dim=1)
        if ctx.needs_input_grad[0]:
            d_gp = torch.where(nonzero, 2 * s * d / safe_n, zero).to(gp.dtype)
        if ctx.needs_input_grad[1]:
            d_gn = torch.where(nonzero, s / safe_n, zero)
        if ctx.needs_input_grad[3]:
            d_norm = torch.where(
                nonzero, s * (2 * gp_a * (slope * n - d) - gn) / (safe_n * safe_n), zero
            )
    return d_gp, d_gn, d_grads, d_norm, None, None, None


_backward_op.register_autograd(_backward_backward, setup_context=_setup_backward_context)


class _EagerPenalty(torch.autograd.Function):
    """The same kernels and derivatives as the torch.library op, for eager calls, with the
    batch reduction folded in: the op's per-call dispatch (~90 us for forward + backward
    on this CPU) and a separate `mean` node (~25 us) dominate small inputs. torch.compile
    traces the torch.library op instead (see below)."""

    @staticmethod
    def forward(ctx, grads, target, one_sided, backend, reduction):
        penalty, norm = _forward_kernels(grads, target, one_sided, backend)
        ctx.save_for_backward(grads, norm)
        ctx.args = (target, one_sided, backend)
        ctx.reduction = reduction
        # norm is an output (not only saved) so that, under create_graph, the derivatives
        # with respect to it reach grads through this node
        return _checks.reduce_batch(penalty, reduction), norm

    @staticmethod
    def backward(ctx, grad_out, grad_norm):
        grads, norm = ctx.saved_tensors
        grad_penalty = grad_out
        if ctx.reduction != "none":
            rows = grads.shape[0]
            scale = 1.0 / rows if ctx.reduction == "mean" and rows else 1.0
            grad_penalty = (grad_out * scale).expand(rows)
        grad_grads = _grad_grads(grads, norm, grad_penalty, grad_norm, *ctx.args, True)
        return grad_grads, None, None, None, None


# --- the public function ------------------------------------------------------------------


def gradient_penalty(
    grads: Tensor,
    *,
    target: float = 1.0,
    one_sided: bool = False,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Penalty on per-sample gradient norms, the core of WGAN-GP, DRAGAN and R1/R2.

    Args:
        grads: [B, ...] gradients (typically of a critic's output with respect to its
            input, from `torch.autograd.grad(..., create_graph=True)`).
        target: the norm the penalty pulls towards (1 for WGAN-GP, 0 for R1/R2).
        one_sided: penalize only norms above `target`: max(0, n - target)**2.
        reduction: "none" gives the penalty per sample [B]; "sum" and "mean" a scalar.
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).

    Returns the penalty in grads' dtype; norms accumulate in float32 (float64 for float64).
    Differentiable with respect to `grads` to any order.
    """
    _checks.check_floating(grads, "grads")
    if grads.dim() < 1:
        raise RuntimeError("grads must have a batch dimension, got a 0-d tensor")
    target = _checks.check_real(target, "target")
    one_sided = _checks.check_bool(one_sided, "one_sided")
    _checks.check_reduction(reduction)
    which = _backend.resolve(backend, OP, grads.device)
    if which == "reference":
        penalty = gradient_penalty_reference(grads, target, one_sided)
    elif torch.compiler.is_compiling():
        penalty, _ = _op(grads, target, one_sided, which)
    elif which == "native" and grads.device.type == "cpu":
        node = _backend.native_entry(OP, "autograd", grads.device)
        return node(grads, target, one_sided, reduction)[0]
    else:
        return _EagerPenalty.apply(grads, target, one_sided, which, reduction)[0]
    return _checks.reduce_batch(penalty, reduction)
