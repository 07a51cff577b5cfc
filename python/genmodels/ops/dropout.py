"""Dropout with its mask drawn inside the kernel from the genmodels Philox stream.

    out = x * keep / (1 - p),   keep in {0, 1}

Element i of x in memory order is dropped iff `genmodels.ops._philox.dropout_dropped`
says so for the (seed, offset) drawn from `generator`: the mask is a function of
(seed, offset, i) only, so backward draws it again instead of saving it, and every backend
drops the same elements for one seed. Memory order is x's storage order when x is
non-overlapping and dense (contiguous, channels_last, any dense permutation: the kernels
walk the storage, so no layout costs a copy), else row-major after a contiguous copy. The
output has x's dtype, shape and strides; float16 and bfloat16 are computed in float32.

Dropout is linear and its own adjoint in memory order, so its backward is the same op on
grad_out laid out like the output, which makes it differentiable to any order. Eager calls
on the native kernels run one C++ autograd node (csrc/dropout/dropout_autograd.cpp):
a Python autograd.Function costs as much as the kernel at PixelCNN sizes. Triton calls run
`_Eager`, and torch.compile traces the torch.library op (fake kernel, registered autograd).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch._prims_common import is_non_overlapping_and_dense_or_false

from genmodels import _backend
from genmodels.ops import _checks
from genmodels.ops._philox import draw_seed, dropout_dropped, dropout_threshold, seed_words

OP = "dropout"


def dropout_scale(p: float) -> float:
    """1 / (1 - p) in float64; float32 kernels round it to float32 once."""
    return 1.0 / (1.0 - p)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def memory_order(x: Tensor) -> Tensor:
    """The tensor whose storage the kernels walk: `x` itself when it is non-overlapping and
    dense, else a contiguous copy. Kernels, fake kernel and reference share this rule."""
    # The two common layouts first: the general test costs ~14 us (symbolic-shape
    # machinery), about half of a whole call at PixelCNN sizes.
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x if is_non_overlapping_and_dense_or_false(x) else x.contiguous()


def _in_memory_order(t: Tensor, strides: tuple[int, ...]) -> Tensor:
    """`t` with the given strides: a gradient has to follow the output's memory order to
    meet the same mask."""
    if all(n <= 1 or a == b for n, a, b in zip(t.shape, t.stride(), strides, strict=True)):
        return t
    return torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device).copy_(t)


# --- reference: the spec -----------------------------------------------------------------


def dropout_reference(x: Tensor, seed: Tensor, p: float) -> Tensor:
    """x * keep / (1 - p) in plain PyTorch (differentiable by autograd to any order)."""
    x = memory_order(x)
    s, o = seed_words(seed)
    # Every element's position in memory: x is dense, so its strides index 0 .. numel - 1.
    positions = torch.arange(x.numel(), device=x.device).as_strided(x.shape, x.stride())
    dropped = dropout_dropped(s, o, positions, dropout_threshold(p))
    acc = _acc(x.dtype)
    zero = torch.zeros((), dtype=acc, device=x.device)
    scale = torch.tensor(dropout_scale(p), dtype=acc, device=x.device)
    return (x.to(acc) * torch.where(dropped, zero, scale)).to(x.dtype)


# --- kernels behind one torch.library op --------------------------------------------------


def _kernel(x: Tensor, seed: Tensor, p: float, backend: str) -> Tensor:
    x = memory_order(x)
    if backend == "triton":
        from genkernels import dropout as kernels

        s, o = seed_words(seed)
        return kernels.forward(x, s, o, dropout_threshold(p), dropout_scale(p))
    # The int64 words themselves: pybind11 takes int64_t, and C++ reads them as uint64.
    s, o = seed.tolist()
    return _backend.native_entry(OP, "forward", x.device)(x, p, s, o)


@torch.library.custom_op("genmodels::dropout", mutates_args=())
def _op(x: Tensor, seed: Tensor, p: float, backend: str) -> Tensor:
    return _kernel(x, seed, p, backend)


@_op.register_fake
def _(x, seed, p, backend):
    return torch.empty_like(memory_order(x))


def _setup_context(ctx, inputs, output):
    _, seed, p, backend = inputs
    ctx.save_for_backward(seed)
    ctx.p, ctx.backend = p, backend
    ctx.strides = output.stride()


def _gradient(ctx, grad_out, apply):
    (seed,) = ctx.saved_tensors
    return apply(_in_memory_order(grad_out, ctx.strides), seed, ctx.p, ctx.backend)


def _backward(ctx, grad_out):
    return _gradient(ctx, grad_out, _op), None, None, None


_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's kernels and derivatives for eager calls, without the torch.library
    dispatch and autograd wrapper (~100 us a call). torch.compile traces the op instead."""

    @staticmethod
    def forward(ctx, x, seed, p, backend):
        out = _kernel(x, seed, p, backend)
        _setup_context(ctx, (x, seed, p, backend), out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Through apply, so that under create_graph the gradient is differentiable again.
        return _gradient(ctx, grad_out, _Eager.apply), None, None, None


# --- the public function ------------------------------------------------------------------


def _check_args(x, p, training, generator) -> float:
    _checks.check_floating(x, "x")
    p = _checks.check_unit_interval(p, "p")
    _checks.check_bool(training, "training")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != x.device.type:
            raise RuntimeError(f"generator is on {generator.device} but x is on {x.device}")
    return p


def dropout(
    x: Tensor,
    p: float = 0.5,
    *,
    training: bool = True,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> Tensor:
    """Zeroes each element of x with probability p and scales the rest by 1 / (1 - p).

    Args:
        x: a floating-point tensor of any shape and layout.
        p: the probability of dropping an element, in [0, 1].
        training: with False (or p == 0, or an empty x) returns x itself; p == 1 returns
            zeros (x * 0, like torch), whose gradient is zero.
        generator: where the mask's (seed, offset) is drawn from (default: the CPU default
            generator, so `torch.manual_seed` reproduces the mask on every device); it must
            be on x's device type.
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).
    """
    p = _check_args(x, p, training, generator)
    which = _backend.resolve(backend, OP, x.device)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if p == 1.0:
        return x * 0
    seed = draw_seed(generator)
    if which == "reference":
        return dropout_reference(x, seed, p)
    x = memory_order(x)
    if torch.compiler.is_compiling():
        return _op(x, seed, p, which)
    if which == "native":
        s, o = seed.tolist()
        return _backend.native_entry(OP, "autograd", x.device)(x, p, s, o)
    return _Eager.apply(x, seed, p, which)
