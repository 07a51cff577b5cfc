"""Cached incremental sampling of PixelCNN and Gated PixelCNN on native kernels.

Inference only: the samplers mutate their caches and define no gradient (they refuse
parameters that require grad while grad mode is on; `model.sample` runs under no_grad).

The spec is `genmodels.models._sampling.cached_reference` (pure PyTorch): for every
sub-pixel, each layer's output at the new position from its cached input, the vertical
stack of the Gated PixelCNN once per row; `model.sample(method="naive")` is what both are
tested against. This module packs a model's masked convolutions for the kernels and calls
them:

- `pack_conv` lays a convolution out as one [K_g, C_out / G] matrix per output colour group
  g: rows are the kept taps of each kernel row (tap-major, then input channel), then the
  center tap's input-channel prefix that group g sees (mask "A": groups before g; "B":
  groups up to g), so the kernels multiply runs of consecutive cache memory by consecutive
  weight rows and never touch a masked tap.
- On CPU one C++ call (`genmodels._C.pixelcnn_sampling_sample_cpu`) samples the whole batch,
  running a whole sub-pixel step of the network without returning to Python and drawing
  each sub-pixel with the same `multinomial(softmax(float(logits)), 1, generator)` call as
  the naive sampler.

- Elsewhere (CUDA tensors, and Triton under TRITON_INTERPRET=1) the sampler is the
  reference's Python loop with each layer's convolution at the new position run by one
  kernel (`position_kernel`: CUDA in csrc/pixelcnn_sampling/, or Triton), from
  `pack_dense` weights: one kernel launch per layer and sub-pixel, not a fused step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genmodels import _backend
from genmodels.ops.masked_conv2d import _CENTER_RULE, center_channel_mask, spatial_taps

OP = "pixelcnn_sampling"


def resolve_backend(backend: object, device: torch.device) -> str:
    """The backend ("native", "triton" or "reference") for a model on `device`."""
    return _backend.resolve(backend, OP, device)


def position_kernel(backend: str, device: torch.device):
    """The convolution-at-one-position kernel `f(x, weight, bias, runs, i, j)` that the
    per-layer cached sampler calls for `backend` on `device` (GPU tensors, and Triton under
    the interpreter), or None for the pure-PyTorch reference."""
    if backend == "triton":
        from genkernels import pixelcnn_sampling as kernels

        return kernels.conv_at
    if backend == "native" and device.type == "cuda":
        return _backend.native_entry(OP, "conv_at", device)
    return None


# --- packing ------------------------------------------------------------------------------


def tap_runs(k: int, mask_type: str | None) -> tuple[list[tuple[int, int, int]], str | None]:
    """(runs, center rule): the kept taps other than a colour-grouped center as
    (ky, first kx, last kx) runs of consecutive taps in raster order; the rule ("A" or "B")
    of a center tap kept per colour group, or None. mask_type None: every tap (a plain
    convolution)."""
    c = k // 2
    rule = None
    if mask_type is None:
        kept = set(range(k * k))
    else:
        taps, center = spatial_taps(k, mask_type)
        kept = set(taps)
        if center == "on":
            kept.add(c * k + c)
        elif center == "groups":
            rule = _CENTER_RULE[mask_type]
    runs: list[tuple[int, int, int]] = []
    for t in sorted(kept):
        ky, kx = divmod(t, k)
        if runs and runs[-1][0] == ky and runs[-1][2] == kx - 1:
            runs[-1] = (ky, runs[-1][1], kx)
        else:
            runs.append((ky, kx, kx))
    return runs, rule


def center_prefix(rule: str | None, group: int, groups: int, c_in: int) -> int:
    """How many input channels (a prefix, the colour groups being contiguous) output group
    `group` sees at the center tap."""
    if rule is None:
        return 0
    return (group if rule == "A" else group + 1) * c_in // groups


def pack_conv(conv: nn.Conv2d, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """(weight [G, K, Np], bias [G, Np], meta int64) of a MaskedConv2d or a 1x1 nn.Conv2d,
    with G = `groups` output groups (the layer's colour groups, or 1 for a layer computed
    for every output at once); see csrc/pixelcnn_sampling/pixelcnn_sampling.h."""
    w = conv.weight.detach()
    c_out, c_in, k, _ = w.shape
    c = k // 2
    mask_type = getattr(conv, "mask_type", None)
    runs, rule = tap_runs(k, mask_type)
    if rule is not None and groups != getattr(conv, "color_groups", 1):
        raise ValueError(f"{mask_type} convolution packed with {groups} groups")
    cols = [w[:, :, ky, first : last + 1].permute(0, 2, 1).reshape(c_out, -1)
            for ky, first, last in runs]  # fmt: skip
    rows = torch.cat(cols, 1) if cols else w.new_zeros(c_out, 0)
    prefixes = [center_prefix(rule, g, groups, c_in) for g in range(groups)]
    per = c_out // groups
    lanes = 64 // w.element_size()
    np_ = math.ceil(per / lanes) * lanes
    k_all = rows.shape[1] + max(prefixes)
    weight = w.new_zeros(groups, k_all, np_)
    bias = w.new_zeros(groups, np_)
    for g in range(groups):
        out = slice(g * per, (g + 1) * per)
        weight[g, : rows.shape[1], :per] = rows[out].T
        weight[g, rows.shape[1] : rows.shape[1] + prefixes[g], :per] = w[out, : prefixes[g], c, c].T
        if conv.bias is not None:
            bias[g, :per] = conv.bias.detach()[out]
    meta = [k, c_in, c_out, groups, per, np_, k_all, len(runs)]
    meta += [v for run in runs for v in run] + prefixes
    return weight, bias, torch.tensor(meta, dtype=torch.int64)


def pack_dense(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """(weight [K, C_out], runs int64 [3, R]) of a convolution computed for every output at
    once: rows are the kept taps, tap-major then input channel, the center tap last with
    its weights multiplied by the colour-group mask; run r is (ky, first kx, rows)."""
    w = conv.weight.detach()
    c_out, c_in, k, _ = w.shape
    c = k // 2
    mask_type = getattr(conv, "mask_type", None)
    runs, rule = tap_runs(k, mask_type)
    cols = [w[:, :, ky, first : last + 1].permute(0, 2, 1).reshape(c_out, -1)
            for ky, first, last in runs]  # fmt: skip
    table = [(ky, first, (last - first + 1) * c_in) for ky, first, last in runs]
    if rule is not None:
        cm = center_channel_mask(c_out, c_in, mask_type, conv.color_groups, dtype=w.dtype,
                                 device=w.device)  # fmt: skip
        cols.append(w[:, :, c, c] * cm)
        table.append((c, c, c_in))
    weight = torch.cat(cols, 1).T.contiguous() if cols else w.new_zeros(0, c_out)
    runs_t = torch.tensor(table, dtype=torch.int64, device=w.device).reshape(-1, 3).T
    return weight, runs_t.contiguous()


def model_convs(model) -> tuple[str, list[tuple[nn.Conv2d, int]]]:
    """The kernels' model name and (convolution, output groups) in their order."""
    from genmodels.models.pixelcnn import PixelCNN

    g = model.color_groups
    head = [(model.output[1], g), (model.output[3], g)]
    if isinstance(model, PixelCNN):
        convs = [(model.input, g)]
        for block in model.blocks:
            convs += [(block[1], g), (block[3], g), (block[6], g)]
        return "pixelcnn", convs + head
    convs = []
    for layer in model.layers:
        convs += [(layer.conv_v, 1), (layer.v_to_h, 1), (layer.conv_h, g), (layer.h_out, g),
                  (layer.skip, g)]  # fmt: skip
    return "gated", convs + head


def model_cond(model, y: Tensor | None) -> Tensor | None:
    """The per-image class rows the kernels add: PixelCNN [N, hidden], Gated PixelCNN
    [layers, 2, N, 2 * hidden] (vertical, horizontal)."""
    if y is None:
        return None
    from genmodels.models.pixelcnn import PixelCNN

    if isinstance(model, PixelCNN):
        return model.class_bias(y).detach().contiguous()
    rows = [torch.stack([layer.cond_v(y), layer.cond_h(y)]) for layer in model.layers]
    return torch.stack(rows).detach().contiguous()


def workspace_elements(model, n: int) -> int:
    """Elements of the caches the native sampler keeps for n images (the model's dtype)."""
    name, convs = model_convs(model)
    metas = [pack_conv(conv, g)[2] for conv, g in convs]
    return _backend._C.pixelcnn_sampling_workspace_cpu(
        name, metas, n, model.in_channels, model.image_size, model.levels
    )


def cache_bytes(model, n: int) -> int:
    """Bytes of the caches and packed weights the native sampler holds while it samples n
    images (what `sample` frees when it returns)."""
    itemsize = next(model.parameters()).element_size()
    _, convs = model_convs(model)
    packed = sum(sum(t.nbytes for t in pack_conv(conv, g)[:2]) for conv, g in convs)
    return workspace_elements(model, n) * itemsize + packed


def new_workspace(elements: int, dtype: torch.dtype) -> Tensor:
    """The zeroed tensor that holds every cache of one `sample` call."""
    return torch.zeros(elements, dtype=dtype)


def sample(model, n: int, y: Tensor | None, generator, *, backend: str = "native",
           record: bool = False):  # fmt: skip
    """(images [n, C, H, W], logits [n, levels, C, H, W] or None) from the native sampler."""
    if backend != "native":
        raise RuntimeError(f"pixelcnn_sampling.sample runs the native kernels, got {backend!r}")
    params = list(model.parameters())
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        raise RuntimeError(
            "pixelcnn_sampling is inference-only (no autograd): call it under torch.no_grad()"
        )
    p = params[0]
    if p.device.type != "cpu":
        raise RuntimeError(f"the native cached sampler runs on CPU, the model is on {p.device}")
    name, convs = model_convs(model)
    packed = [pack_conv(conv, g) for conv, g in convs]
    weights, biases, metas = (list(t) for t in zip(*packed, strict=True))
    size, channels, levels = model.image_size, model.in_channels, model.levels
    x = torch.zeros(n, channels, size, size, dtype=torch.long)
    logits = torch.zeros(n, levels, channels, size, size, dtype=p.dtype) if record else None
    elements = _backend._C.pixelcnn_sampling_workspace_cpu(name, metas, n, channels, size,
                                                           levels)  # fmt: skip
    workspace = new_workspace(elements, p.dtype)
    cond = model_cond(model, y)
    _backend._C.pixelcnn_sampling_sample_cpu(
        name, x, logits, workspace, weights, biases, metas, cond, levels, generator
    )
    return x, logits
