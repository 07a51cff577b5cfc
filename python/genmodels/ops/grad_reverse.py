"""Gradient reversal (Ganin and Lempitsky 2015): identity forward, ``-lambda_ * grad`` backward.

    out = x,   d loss / d x = -lambda_ * d loss / d out

Placed between a feature extractor and a domain classifier, it lets one backward pass train
the classifier to tell the domains apart and the extractor to make them indistinguishable.

Every backend runs the same two torch operations (a copy forward, a multiplication by
``-lambda_`` backward): a native C++, CUDA or Triton kernel for a negation-scale would only
add a launch, so ``backend=`` is accepted and checked for the uniform op signature, and no
backend has a kernel of its own. The backward is the plain multiplication, which is linear in
the incoming gradient, so the op is differentiable to any order (the derivative of the
backward with respect to ``grad`` is ``-lambda_`` again).

Eager calls run `_Eager`, an autograd.Function whose forward is a view of x (no copy, and
no torch.library dispatch: a custom op costs ~100 us a call, more than the features it
reverses). torch.compile traces the torch.library op ``genmodels::grad_reverse`` instead
(fake kernel and registered autograd; its forward is a copy, since a custom op may not
return an alias of its input).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _checks

OP = "grad_reverse"


# --- reference: the spec -----------------------------------------------------------------


class _Reference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * -ctx.lambda_, None


def grad_reverse_reference(x: Tensor, lambda_: float) -> Tensor:
    """A copy of x whose gradient is ``-lambda_`` times the incoming one."""
    return _Reference.apply(x, lambda_)


# --- the torch.library op ------------------------------------------------------------------


@torch.library.custom_op("genmodels::grad_reverse", mutates_args=())
def _op(x: Tensor, lambda_: float) -> Tensor:
    return x.clone()


@_op.register_fake
def _(x, lambda_):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.lambda_ = inputs[1]


def _backward(ctx, grad_out):
    return grad_out * -ctx.lambda_, None


_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's semantics for eager calls, without the torch.library dispatch; the output
    is a view of x (as in the usual gradient-reversal layer), so nothing is copied."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * -ctx.lambda_, None


# --- the public function ------------------------------------------------------------------


def grad_reverse(x: Tensor, lambda_: float = 1.0, *, backend: str = "auto") -> Tensor:
    """x unchanged in the forward pass; its gradient multiplied by ``-lambda_`` in backward.

    Args:
        x: a floating-point tensor of any shape and layout (empty tensors included).
        lambda_: the reversal weight, a finite real number (Python or 0-d tensor); 0 blocks
            the gradient, negative values pass it through scaled.
        backend: "auto", "native", "triton" or "reference": checked, and all run the same
            torch operations (see the module docstring).

    Returns a tensor equal to x (a view of it in eager mode, a copy under torch.compile and
    with backend="reference"), differentiable to any order.
    """
    _checks.check_floating(x, "x")
    lambda_ = _checks.check_real(lambda_, "lambda_")
    backend = _backend._check_name(backend, "backend")
    if backend == "reference":
        return grad_reverse_reference(x, lambda_)
    if torch.compiler.is_compiling():
        return _op(x, lambda_)
    return _Eager.apply(x, lambda_)
