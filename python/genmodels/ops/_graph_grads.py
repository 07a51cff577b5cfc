"""Gradients that are differentiable again, for backward passes under create_graph=True:
the kernels' backward builds no graph, so they come from the reference by autograd."""

from __future__ import annotations

import torch


def reference_grads(ctx, reference, inputs, grad_outputs) -> list:
    """d reference(*inputs) / d inputs against `grad_outputs`, with create_graph=True, for
    the inputs that are tensors and need a gradient (None elsewhere, zeros if unused)."""
    wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[i]]
    grads = [None] * len(inputs)
    if not wanted:
        return grads
    with torch.enable_grad():
        out = reference(*inputs)
        found = torch.autograd.grad(
            out, [inputs[i] for i in wanted], grad_outputs, create_graph=True, allow_unused=True
        )
    for i, g in zip(wanted, found, strict=True):
        grads[i] = torch.zeros_like(inputs[i]) if g is None else g
    return grads
