"""Fused reparameterization and Gaussian KL for VAEs.

    z  = mu + eps * exp(logvar / 2)
    kl = 0.5 * sum(exp(logvar) + mu**2 - 1 - logvar)   over every non-batch dim

With `eps=None` the noise is the Philox stream of a (seed, offset) drawn from
`generator` (genmodels.ops._philox): kernels draw it in-register, and backward draws it
again instead of saving it, so nothing of the size of `mu` is kept for backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _checks
from genmodels.ops._graph_grads import reference_grads
from genmodels.ops._philox import draw_seed, philox_normals, seed_words

OP = "reparameterize_kl"


# --- reference: the spec -----------------------------------------------------------------


def reparameterize_kl_reference(
    mu: Tensor, logvar: Tensor, eps: Tensor | None, seed: Tensor | None, num_samples: int
) -> tuple[Tensor, Tensor]:
    """z [num_samples, *mu.shape] and kl [B] in plain PyTorch (differentiable by autograd)."""
    acc = torch.float64 if mu.dtype == torch.float64 else torch.float32
    mu_a, logvar_a = mu.to(acc), logvar.to(acc)
    if eps is None:
        s, o = seed_words(seed)
        eps = philox_normals(s, o, num_samples * mu.numel(), mu.device)
        eps = eps.view(num_samples, *mu.shape)
    z = mu_a + eps.to(acc) * torch.exp(0.5 * logvar_a)
    terms = torch.exp(logvar_a) + mu_a * mu_a - 1.0 - logvar_a
    kl = 0.5 * terms.reshape(mu.shape[0], -1).sum(dim=1)
    return z.to(mu.dtype), kl.to(mu.dtype)


# --- kernels behind one torch.library op --------------------------------------------------


def _forward_kernels(mu, logvar, eps, seed, num_samples, backend):
    s, o = seed_words(seed)
    if backend == "triton":
        from genkernels import reparameterize_kl as kernels

        return kernels.forward(mu, logvar, eps, s, o, num_samples)
    forward = _backend.native_entry(OP, "forward", mu.device)
    return forward(mu, logvar, eps, _signed(s), _signed(o), num_samples)


def _backward_kernels(grad_z, grad_kl, mu, logvar, eps, seed, num_samples, backend):
    s, o = seed_words(seed)
    if backend == "triton":
        from genkernels import reparameterize_kl as kernels

        return kernels.backward(grad_z, grad_kl, mu, logvar, eps, s, o, num_samples)
    backward = _backend.native_entry(OP, "backward", mu.device)
    return backward(grad_z, grad_kl, mu, logvar, eps, _signed(s), _signed(o), num_samples)


@torch.library.custom_op("genmodels::reparameterize_kl", mutates_args=())
def _op(
    mu: Tensor, logvar: Tensor, eps: Tensor | None, seed: Tensor, num_samples: int, backend: str
) -> tuple[Tensor, Tensor]:
    return _forward_kernels(mu, logvar, eps, seed, num_samples, backend)


@_op.register_fake
def _(mu, logvar, eps, seed, num_samples, backend):
    return mu.new_empty((num_samples, *mu.shape)), mu.new_empty((mu.shape[0],))


@torch.library.custom_op("genmodels::reparameterize_kl_backward", mutates_args=())
def _backward_op(
    grad_z: Tensor,
    grad_kl: Tensor,
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor | None,
    seed: Tensor,
    num_samples: int,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return _backward_kernels(grad_z, grad_kl, mu, logvar, eps, seed, num_samples, backend)


@_backward_op.register_fake
def _(grad_z, grad_kl, mu, logvar, eps, seed, num_samples, backend):
    return torch.empty_like(mu), torch.empty_like(logvar)


def _setup_context(ctx, inputs, output):
    mu, logvar, eps, seed, num_samples, backend = inputs
    ctx.save_for_backward(mu, logvar, eps, seed)
    ctx.num_samples = num_samples
    ctx.backend = backend


def _gradients(ctx, grad_z, grad_kl, backward):
    mu, logvar, eps, seed = ctx.saved_tensors
    if grad_z is None:
        grad_z = mu.new_zeros((ctx.num_samples, *mu.shape))
    if grad_kl is None:
        grad_kl = mu.new_zeros((mu.shape[0],))
    if torch.is_grad_enabled():
        # create_graph=True: the kernels build no graph, so the gradients come from the
        # reference by autograd (the same noise: eps, or the Philox stream of `seed`).
        return (
            *reference_grads(
                ctx,
                lambda m, lv, e: reparameterize_kl_reference(m, lv, e, seed, ctx.num_samples),
                (mu, logvar, eps),
                (grad_z, grad_kl),
            ),
            None,
            None,
            None,
        )
    grad_mu, grad_logvar = backward(
        grad_z, grad_kl, mu, logvar, eps, seed, ctx.num_samples, ctx.backend
    )
    grad_eps = None
    if eps is not None and ctx.needs_input_grad[2]:
        grad_eps = grad_z * torch.exp(0.5 * logvar.float()).to(logvar.dtype)
    return grad_mu, grad_logvar, grad_eps, None, None, None


def _backward(ctx, grad_z, grad_kl):
    return _gradients(ctx, grad_z, grad_kl, _backward_op)


_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The same kernels and derivatives as the torch.library op, for eager calls: the op's
    dispatch and autograd bookkeeping cost more than the kernels at VAE-latent sizes
    (B=128, D=32). torch.compile traces the torch.library op instead."""

    # forward(ctx, ...) rather than a separate setup_context: the latter binds the
    # call's signature with inspect on every call, which costs more than the kernel here.
    @staticmethod
    def forward(ctx, mu, logvar, eps, seed, num_samples, backend):
        _setup_context(ctx, (mu, logvar, eps, seed, num_samples, backend), None)
        return _forward_kernels(mu, logvar, eps, seed, num_samples, backend)

    @staticmethod
    def backward(ctx, grad_z, grad_kl):
        return _gradients(ctx, grad_z, grad_kl, _backward_kernels)


def _signed(word: int) -> int:
    # pybind11 takes int64_t; the C++ side reinterprets it as uint64.
    return word - (1 << 64) if word >= (1 << 63) else word


_NO_SEED = torch.zeros(2, dtype=torch.int64)


# --- the public function ------------------------------------------------------------------


def _check_args(mu, logvar, eps, num_samples, generator, reduction):
    _checks.check_floating(mu, "mu")
    if mu.dim() < 1:
        raise RuntimeError("mu must have a batch dimension, got a 0-d tensor")
    _checks.check_like(logvar, mu, "logvar", "mu")
    k = 1 if num_samples is None else _checks.check_positive_int(num_samples, "num_samples")
    if eps is not None:
        shape = mu.shape if num_samples is None else (k, *mu.shape)
        _checks.check_like(eps, mu, "eps", "mu", shape=shape)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    _checks.check_reduction(reduction)
    return k


def reparameterize_kl(
    mu: Tensor,
    logvar: Tensor,
    *,
    eps: Tensor | None = None,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "none",
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Samples z ~ N(mu, exp(logvar)) and returns (z, KL(N(mu, exp(logvar)) || N(0, I))).

    Args:
        mu, logvar: [B, ...] mean and log-variance of a diagonal Gaussian.
        eps: optional standard-normal noise, shaped like `mu` (or [num_samples, *mu.shape]).
            Without it the noise is drawn inside the kernel from `generator` (default: the
            CPU default generator, so `torch.manual_seed` reproduces it on every device).
        num_samples: draw this many samples per input; `z` is then [num_samples, *mu.shape].
        reduction: "none" gives the KL per batch element [B]; "sum" and "mean" a scalar.
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).
    """
    k = _check_args(mu, logvar, eps, num_samples, generator, reduction)
    which = _backend.resolve(backend, OP, mu.device)
    if eps is not None and num_samples is None:
        eps = eps.unsqueeze(0)
    seed = draw_seed(generator) if eps is None else _NO_SEED
    if which == "reference":
        z, kl = reparameterize_kl_reference(mu, logvar, eps, seed, k)
    elif torch.compiler.is_compiling():
        z, kl = _op(mu, logvar, eps, seed, k, which)
    else:
        z, kl = _Eager.apply(mu, logvar, eps, seed, k, which)
    if num_samples is None:
        z = z.squeeze(0)
    return z, _checks.reduce_batch(kl, reduction)
