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

aten = torch.ops.aten

_AFFINE = (nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)


def _flatten(module: nn.Module) -> list[nn.Module] | None:
    if isinstance(module, nn.Sequential):
        layers = []
        for child in module:
            inner = _flatten(child)
            if inner is None:
                return None
            layers += inner
        return layers
    if isinstance(module, nn.Identity):
        return []
    if isinstance(module, nn.Conv2d):
        # "same"/"valid" strings and non-zero padding modes have no direct backward call.
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return None
        return [module]
    if isinstance(module, (nn.Linear, *_ACTIVATIONS)):
        return [module]
    if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
        return [module]
    return None


def chain_of(D: object) -> list[nn.Module] | None:
    """The layers of `D` when it is a piecewise-linear chain, else None.

    Accepted: an ``nn.Sequential`` (nested ones too) of Conv2d (zero padding), Linear,
    ReLU, LeakyReLU, Flatten and Identity with at least one affine layer, or a module whose
    ``piecewise_linear_layers()`` returns such a list (the DCGAN critic does).
    """
    if isinstance(D, nn.Sequential):
        layers = _flatten(D)
    elif callable(getattr(D, "piecewise_linear_layers", None)):
        found = D.piecewise_linear_layers()
        layers = None if found is None else _flatten(nn.Sequential(*found))
    else:
        return None
    if not layers or not any(isinstance(m, _AFFINE) for m in layers):
        return None
    return layers


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
