"""First-order passes of a piecewise-linear critic: the exact parameter gradient of a
gradient penalty without double backward.

A critic made of affine layers (Conv2d, Linear) and ReLU/LeakyReLU is linear inside each
activation region, so its input gradient is, for the activation pattern at x,

    g = grad_x D(x) = W_1^T S_1 W_2^T S_2 ... w_L,   S_k = the slopes of activation k at x,

multilinear in the weights. For a penalty P(g) with v = dP/dg held fixed, v . g is the
derivative of D at x along v, and the chain rule gives

    dP/dW_k = b_k (x) t_k,   dP/d(bias_k) = 0,

with b_k the ordinary backward signal at layer k's output (unit output gradient) and t_k
the tangent at its input: t_1 = v, then each affine layer without its bias and each
activation's slopes. That is one forward, one backward to the input, one tangent forward
and one weight-gradient pass: what autograd's double backward computes too, minus the
zeros it propagates back through the forward graph (activation second derivatives vanish
almost everywhere) and minus the graph it records.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

aten = torch.ops.aten

_AFFINE = (nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
# Exact classes only: a subclass may override forward (genmodels.nn.MaskedConv2d masks its
# weight there), and the chain would silently run the parent's computation instead.
_LAYER_TYPES = (nn.Conv2d, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Flatten, nn.Identity)
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


class NotAChain(ValueError):
    """Why a critic is not a chain the first-order passes compute exactly."""


def _describe(m: nn.Module, path: str) -> str:
    return f"{path or 'D'} ({type(m).__name__})"


def _check_module(m: nn.Module, path: str) -> None:
    """Refuses a module whose call does more than its class's plain forward."""
    if parametrize.is_parametrized(m):
        names = ", ".join(m.parametrizations.keys())
        raise NotAChain(f"{_describe(m, path)} has parametrizations ({names})")
    hooks = [name.strip("_") for name in _HOOK_DICTS if getattr(m, name, None)]
    if hooks:
        raise NotAChain(f"{_describe(m, path)} has {' and '.join(hooks)} registered")
    for name, p in m.named_parameters(recurse=False):
        if type(p) is not nn.Parameter and type(p) is not torch.Tensor:
            raise NotAChain(f"{_describe(m, path)}.{name} is a {type(p).__name__}")


def _plain_sequential(m: nn.Module) -> bool:
    """An nn.Sequential, or a subclass that keeps its call, forward and iteration (a class
    that only adds a constructor, as genmodels' ADDA discriminator does)."""
    cls = type(m)
    return isinstance(m, nn.Sequential) and all(
        getattr(cls, name) is getattr(nn.Sequential, name)
        for name in ("__call__", "forward", "__iter__", "_call_impl")
    )


def _flatten(module: nn.Module, path: str) -> list[nn.Module]:
    _check_module(module, path)
    if _plain_sequential(module):
        layers = []
        # Not named_children(): it skips a module that appears twice.
        for name, child in module._modules.items():
            layers += _flatten(child, f"{path}.{name}" if path else name)
        return layers
    if type(module) not in _LAYER_TYPES:
        raise NotAChain(
            f"{_describe(module, path)} is not one of the layers the first-order passes "
            "compute: exactly nn.Conv2d (zero padding), nn.Linear, nn.ReLU, nn.LeakyReLU, "
            "nn.Flatten (start_dim=1) or nn.Identity, inside plain nn.Sequential containers"
        )
    if type(module) is nn.Identity:
        return []
    if type(module) is nn.Conv2d:
        # "same"/"valid" strings and non-zero padding modes have no direct backward call.
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise NotAChain(
                f"{_describe(module, path)} has padding={module.padding!r}, "
                f"padding_mode={module.padding_mode!r}; the chain takes int zero padding"
            )
    if type(module) is nn.Flatten and (module.start_dim, module.end_dim) != (1, -1):
        raise NotAChain(f"{_describe(module, path)} flattens dims other than 1..-1")
    return [module]


def _declaring_class(D: nn.Module) -> type:
    for cls in type(D).__mro__:
        if "piecewise_linear_layers" in vars(cls):
            return cls
    return type(D)


def find_chain(D: object) -> list[nn.Module]:
    """The layers of `D` when it is a piecewise-linear chain; raises NotAChain saying which
    module is not, and why.

    Accepted: an ``nn.Sequential`` (nested ones too; a subclass only if it keeps the
    container's forward, call and iteration) of exactly Conv2d (zero padding),
    Linear, ReLU, LeakyReLU, Flatten and Identity with at least one affine layer, or a
    module whose ``piecewise_linear_layers()`` returns such a list (the DCGAN critic does),
    and whose own class defines ``forward`` beside that method. Refused: subclasses of
    those layers, parametrized modules (spectral_norm, weight_norm), modules with any
    forward or backward hook (the old spectral_norm and weight_norm are pre-hooks), global
    module hooks, parameters that are tensor subclasses, and DistributedDataParallel (its
    gradient synchronisation lives in its own forward: pass it and "auto" uses autograd).
    """
    if not isinstance(D, nn.Module):
        raise NotAChain(f"D is a {type(D).__name__}, not an nn.Module")
    for name in _GLOBAL_HOOKS:
        if getattr(torch.nn.modules.module, name, None):
            raise NotAChain(f"global module hooks are registered ({name.strip('_')})")
    if isinstance(D, nn.parallel.DistributedDataParallel):
        raise NotAChain(
            "D is wrapped in DistributedDataParallel, whose gradient synchronisation runs in "
            "its own forward"
        )
    if _plain_sequential(D):
        layers = _flatten(D, "")
    elif callable(getattr(D, "piecewise_linear_layers", None)):
        owner = _declaring_class(D)
        if type(D).forward is not owner.forward:
            raise NotAChain(
                f"{_describe(D, '')} overrides forward of {owner.__name__}, which declares "
                "piecewise_linear_layers()"
            )
        _check_module(D, "")
        found = D.piecewise_linear_layers()
        if found is None:
            raise NotAChain(f"{_describe(D, '')}.piecewise_linear_layers() returned None")
        # Containers between D and the listed layers may carry hooks too.
        for path, m in D.named_modules():
            if m is not D:
                _check_module(m, path)
        layers = []
        for i, m in enumerate(found):
            layers += _flatten(m, f"piecewise_linear_layers()[{i}]")
    else:
        raise NotAChain(
            f"{_describe(D, '')} is neither an nn.Sequential nor a module with "
            "piecewise_linear_layers()"
        )
    if not any(isinstance(m, _AFFINE) for m in layers):
        raise NotAChain("D has no Conv2d or Linear layer")
    return layers


def chain_of(D: object) -> list[nn.Module] | None:
    """The layers of `D` when it is a piecewise-linear chain (see `find_chain`), else None."""
    try:
        return find_chain(D)
    except NotAChain:
        return None


def _affine(m: nn.Module, h: Tensor, bias: bool = True) -> Tensor:
    b = m.bias if bias else None
    if isinstance(m, nn.Conv2d):
        return F.conv2d(h, m.weight, b, m.stride, m.padding, m.dilation, m.groups)
    return F.linear(h, m.weight, b)


def _conv_backward(m: nn.Conv2d, grad: Tensor, inp: Tensor, which: int) -> Tensor:
    """The input (which=0) or weight (which=1) gradient of convolution `m`."""
    mask = [which == 0, which == 1, False]
    return aten.convolution_backward(
        grad, inp, m.weight, None, m.stride, m.padding, m.dilation, False, [0, 0], m.groups, mask
    )[which]


def _affine_input_grad(m: nn.Module, grad: Tensor, inp: Tensor) -> Tensor:
    if isinstance(m, nn.Conv2d):
        return _conv_backward(m, grad, inp, 0)
    return grad @ m.weight


def _affine_weight_grad(m: nn.Module, grad: Tensor, inp: Tensor) -> Tensor:
    if isinstance(m, nn.Conv2d):
        return _conv_backward(m, grad, inp, 1)
    return grad.reshape(-1, grad.shape[-1]).t() @ inp.reshape(-1, inp.shape[-1])


def _activation_backward(m: nn.Module, grad: Tensor, pre: Tensor) -> Tensor:
    # The slopes autograd uses: 1 where the pre-activation is > 0.
    if isinstance(m, nn.LeakyReLU):
        return aten.leaky_relu_backward(grad, pre, m.negative_slope, False)
    return aten.threshold_backward(grad, pre, 0.0)


class Pass:
    """A forward pass of the chain on `x` [N, ...] that keeps what the later passes need."""

    def __init__(self, layers: list[nn.Module], x: Tensor):
        self.layers, self.rows = layers, x.shape[0]
        self.inputs: list[Tensor] = []  # of each layer
        h = x
        with torch.no_grad():
            for m in layers:
                self.inputs.append(h)
                if isinstance(m, _AFFINE):
                    h = _affine(m, h)
                elif isinstance(m, nn.LeakyReLU):
                    h = F.leaky_relu(h, m.negative_slope)
                elif isinstance(m, nn.ReLU):
                    h = F.relu(h)
                else:
                    h = h.flatten(1)
        if h.numel() != self.rows:
            raise RuntimeError(
                f"D must return one score per sample, its layers give shape {list(h.shape)}"
            )
        self.out_shape = h.shape

    def input_grad(self) -> Tensor:
        """grad_x of sum_i D(x_i); keeps the signal at every affine layer's output."""
        self.signals: dict[int, Tensor] = {}
        grad = self.inputs[0].new_ones(self.out_shape)
        with torch.no_grad():
            for i in range(len(self.layers) - 1, -1, -1):
                m, inp = self.layers[i], self.inputs[i]
                if isinstance(m, _AFFINE):
                    self.signals[i] = grad
                    grad = _affine_input_grad(m, grad, inp)
                elif isinstance(m, _ACTIVATIONS):
                    grad = _activation_backward(m, grad, inp)
                else:
                    grad = grad.reshape(inp.shape)
        return grad

    def penalty_grads(self, v: Tensor) -> dict[Tensor, Tensor]:
        """d/dtheta of v . grad_x D (v held fixed), after `input_grad`."""
        last = max(i for i, m in enumerate(self.layers) if isinstance(m, _AFFINE))
        grads: dict[Tensor, Tensor] = {}
        t = v  # the tangent at the current layer's input
        with torch.no_grad():
            for i, m in enumerate(self.layers[: last + 1]):
                if isinstance(m, _AFFINE):
                    # Summed: a module may appear more than once in the chain.
                    gw = _affine_weight_grad(m, self.signals[i], t)
                    grads[m.weight] = grads[m.weight] + gw if m.weight in grads else gw
                    if m.bias is not None:
                        grads.setdefault(m.bias, torch.zeros_like(m.bias))
                    if i < last:
                        t = _affine(m, t, bias=False)
                elif isinstance(m, _ACTIVATIONS):
                    t = _activation_backward(m, t, self.inputs[i])
                else:
                    t = t.flatten(1)
        return grads


class _WithParameterGrads(torch.autograd.Function):
    """`value`, whose backward hands each parameter its precomputed gradient."""

    @staticmethod
    def forward(ctx, value, grads, *params):
        ctx.grads = grads
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return None, None, *(grad.to(g.dtype) * g for g in ctx.grads)


def with_parameter_grads(value: Tensor, grads: dict[Tensor, Tensor]) -> Tensor:
    params = [p for p in grads if p.requires_grad]
    if not params:
        return value.detach()
    return _WithParameterGrads.apply(value, tuple(grads[p] for p in params), *params)
