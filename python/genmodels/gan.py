"""Gradient penalties for GAN critics: WGAN-GP, DRAGAN, R1 and R2, in one API.

`gradient_penalty(D, real, fake, kind=...)` returns a scalar whose value is the penalty
and whose `.backward()` gives the critic's parameter gradients. The per-sample norms and
the penalty run in the fused op `genmodels.ops.gradient_penalty`.

Methods
-------
``method="autograd"`` (exact): the canonical recipe. ``grads = autograd.grad(D(x).sum(), x,
create_graph=True)``; the penalty of ``grads`` then back-propagates through the
double-backward graph of ``D`` to its parameters.

``method="piecewise-linear"`` (exact, first-order passes only) for critics made of Conv2d,
Linear, ReLU and LeakyReLU layers (an ``nn.Sequential``, or the DCGAN critic without batch
norm): inside each activation region such a critic is linear, so ``dP/dW_k`` is the outer
product of the ordinary backward signal at layer k and the forward tangent of
``v = dP/dg`` at its input (``genmodels._critic_chain`` has the derivation). One forward,
one backward to the input, one tangent forward and one weight-gradient pass, no autograd
graph: the same gradients as "autograd" up to rounding (tested in float64 to 1e-10).
``method="auto"`` picks it exactly when the chain computes what ``D(x)`` computes, and
"autograd" otherwise: every module is exactly one of those classes (no subclass, so no
``genmodels.nn.MaskedConv2d``) inside plain ``nn.Sequential`` containers, or the DCGAN
critic's own ``piecewise_linear_layers()``; no parametrizations (``spectral_norm``,
``weight_norm``), no forward or backward hooks on any module (the older
``torch.nn.utils.spectral_norm``/``weight_norm`` are pre-hooks) and no global module hooks;
no ``critic_args``, scaler or autocast; plain tensors; and not a ``DistributedDataParallel``
wrapper (under torchrun `genmodels train dcgan` passes the wrapped critic, so it takes
"autograd"). ``method="piecewise-linear"`` raises a ValueError naming the module it cannot
take. `genmodels train dcgan` uses "auto".

``method="finite-difference"`` (first-order passes only). With ``P(theta) = sum_b f(||g_b||)``,
``g_b = grad_x D(x_b; theta)``, the chain rule gives

    dP/dtheta = d/dtheta sum_b v_b . grad_x D(x_b; theta),   v_b = dP/dg_b held fixed,

a directional derivative of ``D`` along ``v_b``, which central differences give from two
ordinary forward passes: with ``u_b = v_b / ||v_b||``,

    S(theta) = sum_b ||v_b|| (D(x_b + h u_b) - D(x_b - h u_b)) / (2 h),   dS/dtheta ~= dP/dtheta.

The returned scalar has P's exact value (the gradient ``g`` is computed exactly by one
first-order backward pass) and S's parameter gradient. Nothing needs double backward, so
critics whose layers are ``once_differentiable`` (or custom kernels without double
backward) work, no double-backward graph is kept, and ``D`` may be ``torch.compile``-d
(compiled modules refuse double backward). Cost: one forward+backward to the input, then
one forward+backward of ``D`` on 2B samples, both first order. When ``D`` is a module and
nothing but its parameters can receive the penalty's gradient, that second backward runs
inside the call and the returned scalar carries only ``sum_p p * dS/dp``: no activations
are kept, so computing the penalty before the critic-loss forward passes bounds the step's
peak memory by the larger of the two graphs instead of their sum.

The step is relative to each sample: ``h_b = fd_step * ||x_b||`` (so the estimate does not
depend on the rest of the batch, and DDP shards agree with single-process training).

How far the estimate is from exact: relative L2 error ``||g_fd - g|| / ||g||`` of the whole
parameter gradient, WGAN-GP, float32, 20 random DCGAN critics (64-128-256 channels,
32x32, no batch norm) and batches of 16 each (``python benchmarks/fd_error.py``):

    fd_step   ELU critics: median / max    LeakyReLU(0.2) critics: median / p90 / max
    1e-5      6.7e-3 / 6.9e-3              24   / 49   / 77
    1e-4      6.8e-4 / 7.1e-4              11   / 13   / 14
    1e-3      3.2e-4 / 4.5e-4 (default)    3.5  / 3.7  / 3.8
    1e-2      1.0e-3 / 1.2e-3              1.2  / 1.2  / 1.3
    1e-1      3.8e-3 / 4.1e-3              0.62 / 0.64 / 0.65

Smooth critics (ELU, SiLU, softplus, tanh): truncation error grows with h (O(h) for ELU,
whose second derivative jumps at 0; O(h^2) for C2 activations) and float32 round-off
grows as h shrinks (O(eps / h)); ``fd_step=1e-3`` sits at the minimum, well inside 1e-2.
Piecewise-linear critics (ReLU, LeakyReLU): the surrogate is exact inside one linear
region, but wherever ``x_b +- h u_b`` crosses a kink, ``grad_theta D`` jumps by O(1) and S
divides that by 2h. The number of crossings grows like h, so the bias does not vanish as
h shrinks: on a realistic critic every step is off by 60% to several thousand percent
(R1 gives the same picture: median 0.60 at 1e-1, 3.4 at 1e-3), and only a tiny critic
with a tiny step (few units, no crossing) comes out right. Use "autograd" for
ReLU-type critics (the method warns when it sees such modules in ``D``), or smooth
activations with "finite-difference".

Speed and memory: on the 2-core CPU the first-order method is 0.8-0.9x the canonical
step's speed, and compiling the critic does not help there (benchmarks/results/README.md
has its peak memory). Its value is in what it makes possible: critics without double
backward, compiled critics, CUDA graphs, and the memory bound above.

Mixed precision and DDP
-----------------------
Under ``torch.autocast`` pass the ``GradScaler``: the critic output is scaled before
``autograd.grad`` (so half-precision input gradients do not underflow) and the gradients
are unscaled before the penalty (the PyTorch AMP recipe); an overflow makes the penalty
inf/NaN, and ``scaler.step`` then skips the step as for any other loss. The
finite-difference passes run with autocast disabled (differences of half-precision
outputs would be round-off). Under ``DistributedDataParallel`` pass the wrapped module as
``D``: the penalty is a mean over the local batch, DDP averages parameter gradients over
ranks, and the result equals single-process training on the concatenated batch (equal
local batch sizes); ``autograd.grad`` with respect to the input does not trigger DDP's
gradient hooks, only the final ``backward`` does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from genmodels import _critic_chain
from genmodels.ops import _checks
from genmodels.ops.gradient_penalty import gradient_penalty as _penalty_op

KINDS = ("wgan-gp", "dragan", "r1", "r2")
METHODS = ("autograd", "piecewise-linear", "finite-difference", "auto")
DRAGAN_NOISE = ("normal", "uniform")
DEFAULT_FD_STEP = 1e-3


def _check_choice(value: object, choices: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_positive_real(value: object, name: str) -> float:
    value = _checks.check_real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _check_batch_tensor(t: object, name: str) -> Tensor:
    _checks.check_floating(t, name)
    if t.dim() < 1:
        raise RuntimeError(f"{name} must have a batch dimension, got a 0-d tensor")
    return t


def _row(v: Tensor, like: Tensor) -> Tensor:
    return v.view(v.shape[0], *([1] * (like.dim() - 1)))


def _scores(out: object, batch: int) -> Tensor:
    """D's output as [B] scores; anything but one score per sample is a clear error."""
    if not isinstance(out, Tensor):
        raise TypeError(f"D must return a tensor of scores, got {type(out).__name__}")
    if not (
        (out.dim() == 1 and out.shape[0] == batch)
        or (out.dim() == 2 and out.shape[0] == batch and out.shape[1] == 1)
    ):
        raise RuntimeError(
            f"D must return one score per sample (shape [B] or [B, 1] with B = {batch}), "
            f"got shape {list(out.shape)}"
        )
    return out.reshape(batch)


def _per_sample_alpha(alpha, real, generator) -> Tensor:
    batch = real.shape[0]
    if alpha is None:
        return torch.rand(batch, generator=generator, device=real.device, dtype=real.dtype)
    _checks.check_tensor(alpha, "alpha")
    if alpha.device != real.device:
        raise RuntimeError(f"alpha is on {alpha.device} but real is on {real.device}")
    if tuple(alpha.shape) != (batch,):
        raise RuntimeError(f"alpha must have shape [B] = [{batch}], got {list(alpha.shape)}")
    return alpha.to(real.dtype)


def penalty_points(
    real: Tensor,
    fake: Tensor | None,
    kind: str,
    alpha: Tensor | None = None,
    noise: Tensor | None = None,
    dragan_noise: str = "normal",
    dragan_c: float = 10.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The (detached) points where `kind` evaluates the critic's input gradient."""
    if kind == "r1":
        return real.detach()
    if kind == "r2":
        return fake.detach()
    if kind == "wgan-gp":
        a = _row(_per_sample_alpha(alpha, real, generator), real)
        return (a * real.detach() + (1 - a) * fake.detach()).detach()
    # dragan
    if noise is None:
        if dragan_noise == "normal":  # the paper: delta ~ N(0, c I)
            noise = math.sqrt(dragan_c) * torch.randn(
                real.shape, generator=generator, device=real.device, dtype=real.dtype
            )
        else:  # the authors' code: x + alpha * 0.5 * std(x) * U[0, 1)
            a = _row(_per_sample_alpha(alpha, real, generator), real)
            u = torch.rand(real.shape, generator=generator, device=real.device, dtype=real.dtype)
            noise = a * (0.5 * real.detach().std()) * u
    return (real.detach() + noise).detach()


def _input_grads(D, x, critic_args, critic_kwargs, scaler, create_graph) -> Tensor:
    x = x.detach().requires_grad_(True)
    scores = _scores(D(x, *critic_args, **critic_kwargs), x.shape[0])
    total = scores.sum()
    if scaler is not None:
        total = scaler.scale(total)
    (grads,) = torch.autograd.grad(total, x, create_graph=create_graph)
    if scaler is not None:
        grads = grads / scaler.scale(torch.ones((), device=grads.device, dtype=torch.float32))
    return grads


def _finite_difference(D, x, grads, penalty, critic_args, critic_kwargs, fd_step: float) -> Tensor:
    """P's value, with the parameter gradient of the central-difference surrogate S."""
    value, v = _value_and_direction(penalty, grads)
    batch = x.shape[0]
    c = torch.linalg.vector_norm(v.reshape(batch, -1).float(), dim=1)
    u = v / _row(torch.where(c > 0, c, torch.ones_like(c)), v).to(v.dtype)
    x = x.detach()
    # h_b = fd_step * ||x_b|| (fd_step itself for a zero sample): per sample, so the
    # estimate does not depend on the rest of the batch (DDP shards give the same result);
    # kept on the device, no host sync
    size = torch.linalg.vector_norm(x.reshape(batch, -1).float(), dim=1)
    h = fd_step * torch.where(size > 0, size, torch.ones_like(size))
    with torch.autocast(device_type=x.device.type, enabled=False):
        step = _row(h, x).to(x.dtype) * u
        both = torch.cat([x + step, x - step]).detach()
        args2 = tuple(_twice(a, batch) for a in critic_args)
        kwargs2 = {k: _twice(a, batch) for k, a in critic_kwargs.items()}
        scores = _scores(D(both, *args2, **kwargs2), 2 * batch)
        diff = scores[:batch] - scores[batch:]
        surrogate = ((c / (2 * h)).to(diff.dtype) * diff).sum()
        surrogate = _consume_early(D, surrogate, critic_args, critic_kwargs)
    return value + (surrogate - surrogate.detach()).to(value.dtype)


def _consume_early(D, surrogate: Tensor, critic_args, critic_kwargs) -> Tensor:
    """When only D's parameters can receive S's gradient, back-propagate S now and return
    sum_p (p * dS/dp), which has the same parameter gradient but keeps no activations: the
    2B-sample graph is freed before the call returns. Otherwise S itself."""
    if not isinstance(D, nn.Module):
        return surrogate
    extra = [*critic_args, *critic_kwargs.values()]
    if any(isinstance(a, Tensor) and a.requires_grad for a in extra):
        return surrogate  # conditioning that wants gradients: keep the whole graph
    params = [p for p in D.parameters() if p.requires_grad]
    if not params:
        return surrogate
    grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    terms = [(p * g).sum() for p, g in zip(params, grads, strict=True) if g is not None]
    return torch.stack(terms).sum() if terms else surrogate


_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ReLU6, nn.Hardtanh)


def _warn_if_piecewise_linear(D) -> None:
    if isinstance(D, nn.Module) and any(isinstance(m, _PIECEWISE_LINEAR) for m in D.modules()):
        warnings.warn(
            "method='finite-difference' on a critic with ReLU-type activations: the "
            "parameter gradient is biased where a step crosses a kink (measured relative "
            "errors of 0.6 to 77 on LeakyReLU DCGAN critics, see genmodels.gan); use "
            "method='autograd' or smooth activations (ELU, SiLU, softplus)",
            RuntimeWarning,
            stacklevel=3,
        )


def _twice(a, batch: int):
    """A conditioning argument for the 2B-sample pass: per-sample tensors are repeated."""
    if isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == batch:
        return torch.cat([a, a])
    return a


def gradient_penalty(
    D: Callable[..., Tensor],
    real: Tensor,
    fake: Tensor | None = None,
    *,
    kind: str = "wgan-gp",
    weight: float = 10.0,
    target: float = 1.0,
    alpha: Tensor | None = None,
    noise: Tensor | None = None,
    method: str = "autograd",
    one_sided: bool = False,
    critic_args: tuple = (),
    critic_kwargs: dict | None = None,
    dragan_noise: str = "normal",
    dragan_c: float = 10.0,
    fd_step: float = DEFAULT_FD_STEP,
    every: int = 1,
    iteration: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> Tensor:
    """The gradient penalty of critic `D`, as a scalar to add to the critic's loss.

    Args:
        D: the critic; called as ``D(x, *critic_args, **critic_kwargs)`` and must return
            one score per sample ([B] or [B, 1]). A DDP-wrapped module works. The
            finite-difference pass calls it once on 2B samples (x + h u, then x - h u):
            tensors in ``critic_args``/``critic_kwargs`` whose first dim is B (labels,
            per-sample conditioning) are then repeated, anything else is passed as is.
        real, fake: [B, ...] batches (``fake`` for "wgan-gp" and "r2"). They are detached:
            the penalty trains the critic only.
        kind: "wgan-gp": ``weight * mean((||grad D(x)|| - target)**2)`` at
            ``x = alpha * real + (1 - alpha) * fake``, ``alpha ~ U[0, 1]`` per sample unless
            given ([B]). "dragan": the same at ``x = real + noise``, ``noise ~ N(0, c I)``
            (the paper's formula; ``dragan_c`` = c, default 10, a large perturbation for
            data in [-1, 1]) unless given; ``dragan_noise="uniform"``
            uses the authors' code instead, ``x = real + alpha * 0.5 * std(real) * U[0, 1)``.
            "r1": ``weight / 2 * mean(||grad D(real)||**2)``; "r2": the same at ``fake``
            (``target`` does not apply to R1/R2).
        weight: lambda (gamma for R1/R2).
        one_sided: penalize only norms above ``target`` (WGAN-GP, DRAGAN).
        method: "autograd" (exact, double backward), "piecewise-linear" (exact, first-order
            passes, for Conv2d/Linear/ReLU/LeakyReLU chains; no critic_args, scaler or
            autocast), "auto" ("piecewise-linear" where it applies, else "autograd") or
            "finite-difference" (first-order passes only; see the module docstring for the
            estimator and its error).
        fd_step: relative step of "finite-difference" (``h_b = fd_step * ||x_b||``).
        every, iteration: lazy regularization as in StyleGAN2: with ``every=k`` the
            penalty is computed when ``iteration % k == 0`` and multiplied by k, and is a
            zero tensor otherwise (``genmodels.nn.GradientPenalty`` keeps the counter).
        scaler: the ``torch.amp.GradScaler`` of an autocast training loop.
        generator: random generator for ``alpha`` and the DRAGAN noise.
        backend: backend of the penalty op (see ``genmodels.ops.gradient_penalty``).
    """
    if not callable(D):
        raise TypeError(f"D must be callable (a critic module or function), got {type(D).__name__}")
    kind = _check_choice(kind, KINDS, "kind")
    method = _check_choice(method, METHODS, "method")
    dragan_noise = _check_choice(dragan_noise, DRAGAN_NOISE, "dragan_noise")
    weight = _checks.check_real(weight, "weight")
    target = _checks.check_real(target, "target")
    one_sided = _checks.check_bool(one_sided, "one_sided")
    fd_step = _check_positive_real(fd_step, "fd_step")
    dragan_c = _check_positive_real(dragan_c, "dragan_c")
    every = _checks.check_positive_int(every, "every")
    if not isinstance(critic_args, tuple):
        raise TypeError(f"critic_args must be a tuple, got {type(critic_args).__name__}")
    critic_kwargs = {} if critic_kwargs is None else critic_kwargs
    if not isinstance(critic_kwargs, dict):
        raise TypeError(f"critic_kwargs must be a dict, got {type(critic_kwargs).__name__}")
    if scaler is not None and not hasattr(scaler, "scale"):
        raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    _check_batch_tensor(real, "real")
    if kind in ("wgan-gp", "r2"):
        if fake is None:
            raise ValueError(f"kind={kind!r} needs fake samples: pass fake")
        _checks.check_like(fake, real, "fake", "real")
    if noise is not None:
        if kind != "dragan":
            raise ValueError(f"noise applies to kind='dragan' only, got kind={kind!r}")
        _checks.check_like(noise, real, "noise", "real")
    if alpha is not None and kind not in ("wgan-gp", "dragan"):
        raise ValueError(f"alpha applies to kind='wgan-gp' or 'dragan', got kind={kind!r}")
    if method == "auto":
        try:
            layers = _piecewise_linear_layers(
                D, critic_args, critic_kwargs, scaler, real, fake, noise, alpha
            )
            method = "piecewise-linear"
        except _critic_chain.NotAChain:
            method = "autograd"
    elif method == "piecewise-linear":
        layers = _piecewise_linear_layers(
            D, critic_args, critic_kwargs, scaler, real, fake, noise, alpha
        )
    if every > 1:
        if iteration is None or isinstance(iteration, bool) or not isinstance(iteration, int):
            raise TypeError("every > 1 needs iteration (the int training step counter)")
        if iteration % every != 0:
            return real.new_zeros(())
    elif iteration is not None and (isinstance(iteration, bool) or not isinstance(iteration, int)):
        raise TypeError(f"iteration must be an int, got {type(iteration).__name__}")

    x = penalty_points(real, fake, kind, alpha, noise, dragan_noise, dragan_c, generator)
    if kind in ("r1", "r2"):
        factor, target, one_sided = weight / 2 * every, 0.0, False
    else:
        factor = weight * every

    def penalty(grads: Tensor) -> Tensor:
        return factor * _penalty_op(
            grads, target=target, one_sided=one_sided, reduction="mean", backend=backend
        )

    if method == "autograd":
        grads = _input_grads(D, x, critic_args, critic_kwargs, scaler, create_graph=True)
        return penalty(grads)
    if method == "piecewise-linear":
        run = _critic_chain.Pass(layers, x)
        value, v = _value_and_direction(penalty, run.input_grad())
        return _critic_chain.with_parameter_grads(value, run.penalty_grads(v))
    _warn_if_piecewise_linear(D)
    grads = _input_grads(D, x, critic_args, critic_kwargs, scaler, create_graph=False)
    return _finite_difference(D, x, grads, penalty, critic_args, critic_kwargs, fd_step)


def _value_and_direction(penalty, grads: Tensor) -> tuple[Tensor, Tensor]:
    """The penalty of `grads` (detached) and v = dP/dgrads."""
    leaf = grads.detach().requires_grad_(True)
    with torch.enable_grad():
        value = penalty(leaf)
        (v,) = torch.autograd.grad(value, leaf)
    return value.detach(), v


def _autocast_on(device: torch.device) -> bool:
    return torch.is_autocast_enabled(device.type)


def _piecewise_linear_layers(D, critic_args, critic_kwargs, scaler, *tensors) -> list[nn.Module]:
    """The chain of `D` when the first-order passes compute exactly what autograd would;
    raises _critic_chain.NotAChain (a ValueError) naming what they cannot take."""
    try:
        layers = _critic_chain.find_chain(D)
        if critic_args or critic_kwargs:
            raise _critic_chain.NotAChain("critic_args or critic_kwargs are given")
        if scaler is not None or _autocast_on(tensors[0].device):
            raise _critic_chain.NotAChain("a scaler or autocast is in use (full precision only)")
        for t in tensors:
            if t is not None and type(t) is not torch.Tensor:
                raise _critic_chain.NotAChain(f"an input is a {type(t).__name__}")
    except _critic_chain.NotAChain as e:
        raise _critic_chain.NotAChain(
            f"method='piecewise-linear' cannot take this critic: {e}. It needs an "
            "nn.Sequential of exactly Conv2d (zero padding), Linear, ReLU, LeakyReLU, "
            "Flatten and Identity layers without hooks or parametrizations, or a module "
            "with piecewise_linear_layers() (the DCGAN critic without batch norm); "
            'method="autograd" takes any critic'
        ) from None
    return layers
