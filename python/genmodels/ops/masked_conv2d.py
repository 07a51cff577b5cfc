"""Masked 2-D convolution for PixelCNN and Gated PixelCNN, computing only the kept taps.

Stride 1, odd kernel size k, padding k // 2, NCHW shapes (channels_last accepted).
`weight` is a full [C_out, C_in, k, k] tensor; the taps the mask removes are ignored in
the forward pass and get exactly zero gradient. With center c = k // 2 (row ky, column kx
of the kernel; ky < c is above the output pixel), the tap sets (`mask_type`) are:

  "A", "B"  PixelCNN (van den Oord et al. 2016a): every tap with ky < c, and the taps
            ky == c, kx < c. The center tap (c, c) is off for "A" and on for "B" when
            color_groups == 1; with color_groups == G, channel i of C is in group i*G//C
            and input group gi feeds output group go at the center iff gi < go ("A") or
            gi <= go ("B").
  "VA"      Gated PixelCNN vertical stack, first layer: ky < c (all columns), i.e. rows
            strictly above the output pixel. No center tap, color_groups has no effect.
  "VB"      vertical stack, later layers: ky <= c (all columns). Its input is the previous
            vertical output, which already sees only rows strictly above, so the stack
            never sees the current row of the image (no blind spot, no leak). VA followed
            by VB layers is equivalent to the paper's "rows <= current + down-shift by one
            row" and needs no shift. color_groups has no effect.
  "HA"      horizontal stack, first layer: ky == c, kx < c (current row, left of the pixel);
            center as for "A".
  "HB"      horizontal stack, later layers: ky == c, kx < c, center as for "B".

Every backend except `reference` loops only over the kept taps (the center tap, when some
of its channel pairs are kept, is computed with the center weights multiplied by the
[C_out, C_in] colour-group mask). Kernel backends return channels_last outputs.

`masked_conv2d_gated` adds the Gated PixelCNN activation: with G = color_groups, the
C_out = 2 * C pre-activation channels (conv + bias + optional `addend`) are viewed as
[G, 2, C / G]; output channel j of group g is tanh(a) * sigmoid(b) with a = pre[g, 0, r],
b = pre[g, 1, r] (for G = 1: the first and the second half). Each pair lies in one colour
group, so the output keeps the causal structure. The Triton backend fuses the epilogue.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from genmodels import _backend
from genmodels.ops import _checks
from genmodels.ops._graph_grads import reference_grads

OP = "masked_conv2d"
MASK_TYPES = ("A", "B", "VA", "VB", "HA", "HB")
_CENTER_RULE = {"A": "A", "B": "B", "HA": "A", "HB": "B"}


# --- masks: the tap sets ------------------------------------------------------------------


def check_kernel_size(k: object, name: str = "kernel_size") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer, got {k}")
    return k


def check_mask_type(mask_type: object) -> str:
    if not isinstance(mask_type, str):
        raise TypeError(f"mask_type must be a str, got {type(mask_type).__name__}")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    return mask_type


def check_color_groups(color_groups: object, **channels: int) -> int:
    g = _checks.check_positive_int(color_groups, "color_groups")
    for name, c in channels.items():
        if c % g != 0:
            raise ValueError(f"{name} ({c}) must be divisible by color_groups ({g})")
    return g


@functools.cache
def spatial_taps(k: int, mask_type: str) -> tuple[tuple[int, ...], str]:
    """(taps kept for every channel pair, as ky * k + kx excluding the center; center state).

    The center state is "on", "off" or "groups" (decided per channel pair by the colour
    groups; "groups" becomes "off"/"on" for color_groups == 1 in `tap_plan`).
    """
    c = k // 2
    if mask_type in ("A", "B"):
        taps = [ky * k + kx for ky in range(k) for kx in range(k) if ky < c or (ky == c and kx < c)]
    elif mask_type in ("VA", "VB"):
        rows = c if mask_type == "VA" else c + 1
        taps = [ky * k + kx for ky in range(rows) for kx in range(k) if (ky, kx) != (c, c)]
    else:  # HA, HB
        taps = [c * k + kx for kx in range(c)]
    if mask_type == "VA":
        center = "off"
    elif mask_type == "VB":
        center = "on"
    else:
        center = "groups"
    return tuple(taps), center


def center_channel_mask(
    c_out: int, c_in: int, mask_type: str, color_groups: int, *, dtype=None, device=None
) -> Tensor:
    """[c_out, c_in] mask of the center tap: 1 where input channel i feeds output channel o."""
    rule = _CENTER_RULE.get(mask_type)
    if rule is None:
        value = 1.0 if spatial_taps(1, mask_type)[1] == "on" else 0.0
        return torch.full((c_out, c_in), value, dtype=dtype, device=device)
    g_out = torch.arange(c_out, device=device) * color_groups // c_out
    g_in = torch.arange(c_in, device=device) * color_groups // c_in
    keep = g_in[None, :] < g_out[:, None] if rule == "A" else g_in[None, :] <= g_out[:, None]
    return keep.to(dtype or torch.float32)


def make_mask(
    c_out: int, c_in: int, k: int, mask_type: str = "B", color_groups: int = 1, *, dtype=None,
    device=None,
) -> Tensor:  # fmt: skip
    """The full [c_out, c_in, k, k] 0/1 mask of a tap set (what `weight * mask` multiplies)."""
    taps, _ = spatial_taps(k, mask_type)
    mask = torch.zeros(c_out, c_in, k * k, dtype=dtype or torch.float32, device=device)
    mask[:, :, list(taps)] = 1
    c = k // 2
    mask[:, :, c * k + c] = center_channel_mask(
        c_out, c_in, mask_type, color_groups, dtype=mask.dtype, device=device
    )
    return mask.view(c_out, c_in, k, k)


@functools.cache
def _tap_plan_cached(k: int, c_out: int, c_in: int, mask_type: str, color_groups: int):
    taps, center = spatial_taps(k, mask_type)
    c = k // 2
    if center == "groups":
        cm = center_channel_mask(c_out, c_in, mask_type, color_groups)
        if bool((cm == 1).all()):
            center = "on"
        elif bool((cm == 0).all()):
            center = "off"
    if center == "off":
        return taps, False
    return tuple(sorted((*taps, c * k + c))), center == "groups"


def tap_plan(weight: Tensor, mask_type: str, color_groups: int) -> tuple[list[int], Tensor | None]:
    """Kept taps (ky * k + kx, ascending) and the center's [C_out, C_in] mask (None when the
    center tap is kept, or dropped, for every channel pair)."""
    c_out, c_in, k, _ = weight.shape
    taps, partial = _tap_plan_cached(k, c_out, c_in, mask_type, color_groups)
    cm = None
    if partial:
        cm = center_channel_mask(
            c_out, c_in, mask_type, color_groups, dtype=weight.dtype, device=weight.device
        )
    return list(taps), cm


# --- reference: the spec -----------------------------------------------------------------


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _no_value(t: Tensor) -> Tensor:
    """A zero scalar in `t`'s graph that reads none of its values (0 * t.sum() would turn
    a NaN of t into a NaN of the result)."""
    return t.reshape(-1)[:0].sum()


def _center_input_ends(c_out: int, c_in: int, mask_type: str, color_groups: int):
    """[(output channel slice, number of leading input channels the center feeds it)]."""
    _, center = spatial_taps(1, mask_type)
    if center == "on":
        return [(slice(0, c_out), c_in)]
    if center == "off":
        return []
    offset = 0 if _CENTER_RULE[mask_type] == "A" else 1
    per_out, per_in = c_out // color_groups, c_in // color_groups
    ends = [
        (slice(g * per_out, (g + 1) * per_out), (g + offset) * per_in) for g in range(color_groups)
    ]
    return [(rows, end) for rows, end in ends if end > 0]


def masked_conv2d_reference(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask_type: str = "B", color_groups: int = 1
) -> Tensor:
    """The spec: for each kept tap, its [C_out, C_in] weights times the input shifted by
    that tap (zero padding), summed, accumulated in float32 or better.

    Masked taps, masked center channel pairs and the pixels only they would read are never
    multiplied, so a NaN or Inf there has no influence at all (a dense convolution of
    `weight * mask` turns it into 0 * NaN = NaN). Differentiable by autograd to any order.
    """
    if torch.is_autocast_enabled(x.device.type):
        # The spec accumulates in float32 or better; autocast would run the einsums in half.
        with torch.autocast(x.device.type, enabled=False):
            return masked_conv2d_reference(x, weight, bias, mask_type, color_groups)
    c_out, c_in, k, _ = weight.shape
    n, _, h, w = x.shape
    acc = _acc(x.dtype)
    xa, wa = x.to(acc), weight.to(acc)
    y = xa.new_zeros((n, c_out, h, w)) + _no_value(wa) + _no_value(xa)
    c = k // 2
    taps, _ = spatial_taps(k, mask_type)
    if h and w and n:
        xp = F.pad(xa, (c, c, c, c))
        for t in taps:
            ky, kx = divmod(t, k)
            shifted = xp[:, :, ky : ky + h, kx : kx + w]
            y = y + torch.einsum("oi,nihw->nohw", wa[:, :, ky, kx], shifted)
        center = []
        for rows, end in _center_input_ends(c_out, c_in, mask_type, color_groups):
            part = torch.einsum("oi,nihw->nohw", wa[rows, :end, c, c], xa[:, :end])
            center.append((rows, part))
        if center:
            full = torch.zeros_like(y)
            for rows, part in center:
                full = full.index_add(1, torch.arange(rows.start, rows.stop, device=x.device), part)
            y = y + full
    if bias is not None:
        y = y + bias.to(acc).view(1, -1, 1, 1)
    return y.to(x.dtype)


@functools.cache
def reads_masked_inputs(k: int, c_out: int, c_in: int, mask_type: str, color_groups: int) -> bool:
    """Whether a kernel may multiply a masked position of x by a zero weight: a partial
    center (colour groups) or a bounding-box cover of the kept taps (the native CPU and
    CUDA rectangle paths) reads pixels or channels the mask removes."""
    taps, partial = _tap_plan_cached(k, c_out, c_in, mask_type, color_groups)
    if partial:
        return True
    if not taps:
        return False
    rows = [t // k for t in taps]
    cols = [t % k for t in taps]
    box = (max(rows) - min(rows) + 1) * (max(cols) - min(cols) + 1)
    return box != len(taps)


def _has_non_finite(x: Tensor) -> bool:
    # One reduction instead of isfinite(x).all(): a NaN or Inf anywhere makes the sum
    # non-finite. A sum that only overflows sends a finite input to the exact (slower)
    # reference, which is still the right result.
    return not bool(
        torch.isfinite(x.sum(dtype=torch.float32 if x.dtype != torch.float64 else None))
    )


def _kernel_reads_masked(x: Tensor, weight: Tensor, mask_type: str, color_groups: int,
                         backend: str) -> bool:  # fmt: skip
    c_out, c_in, k, _ = weight.shape
    if not reads_masked_inputs(k, c_out, c_in, mask_type, color_groups):
        return False
    taps, partial = _tap_plan_cached(k, c_out, c_in, mask_type, color_groups)
    if partial or backend != "native" or x.device.type != "cpu":
        return True
    # Which CPU path runs depends on the dtype, k and the processor (and an environment
    # override), so ask the extension: the gather paths read the kept taps only.
    return _backend.native_entry(OP, "reads_box", x.device)(weight, list(taps))


def _kernel_would_leak(
    x: Tensor, weight: Tensor, mask_type: str, color_groups: int, backend: str
) -> bool:
    """A kernel path must not see this input: it may read masked positions holding NaN/Inf."""
    return _kernel_reads_masked(x, weight, mask_type, color_groups, backend) and _has_non_finite(x)


def gated_activation(pre: Tensor, color_groups: int = 1) -> Tensor:
    """tanh(a) * sigmoid(b) over the channel pairs described in the module docstring."""
    n, c2, h, w = pre.shape
    per = c2 // (2 * color_groups)
    v = pre.reshape(n, color_groups, 2, per, h, w)
    out = torch.tanh(v[:, :, 0]) * torch.sigmoid(v[:, :, 1])
    return out.reshape(n, c2 // 2, h, w)


def gate(pre: Tensor, color_groups: int = 1, *, backend: str = "auto") -> Tensor:
    """`gated_activation` with a backend choice: on CPU tensors the native backend runs it
    as one fused pass forward and one backward (a C++ autograd node); elsewhere, and
    under torch.compile (which fuses the composition itself), it is the composition."""
    (pre,) = _autocast(pre)
    _checks.check_floating(pre, "pre")
    check_color_groups(color_groups)
    if pre.dim() != 4 or pre.shape[1] % (2 * color_groups):
        raise RuntimeError(
            f"pre must be [N, 2 * C, H, W] with 2 * C divisible by 2 * color_groups "
            f"({2 * color_groups}), got shape {list(pre.shape)}"
        )
    if pre.device.type == "cpu" and not torch.compiler.is_compiling():
        if _backend.resolve(backend, OP, pre.device) == "native":
            return _backend.native_entry("gated_activation", "autograd", pre.device)(
                pre, color_groups
            )
    return gated_activation(pre, color_groups)


def masked_conv2d_gated_reference(x, weight, bias, addend, mask_type="B", color_groups=1):
    pre = masked_conv2d_reference(x, weight, bias, mask_type, color_groups).to(_acc(x.dtype))
    if addend is not None:
        pre = pre + addend.to(pre.dtype)
    return gated_activation(pre, color_groups).to(x.dtype)


# --- kernels behind torch.library ops -----------------------------------------------------


def _channels_last_empty(x: Tensor, c: int) -> Tensor:
    n, _, h, w = x.shape
    return x.new_empty((n, h, w, c)).permute(0, 3, 1, 2)


def _conv_kernel(x, weight, bias, mask_type, color_groups, backend):
    taps, cm = tap_plan(weight, mask_type, color_groups)
    if backend == "triton":
        from genkernels import masked_conv2d as kernels

        return kernels.forward(x, weight, bias, None, taps, cm, gated_groups=0)
    return _backend.native_entry(OP, "forward", x.device)(x, weight, bias, taps, cm)


def _conv_backward_kernel(grad_out, x, weight, mask_type, color_groups, backend, need_x, need_w):
    taps, cm = tap_plan(weight, mask_type, color_groups)
    if backend == "triton":
        from genkernels import masked_conv2d as kernels

        return kernels.backward(grad_out, x, weight, taps, cm, need_x, need_w)
    backward = _backend.native_entry(OP, "backward", x.device)
    return backward(grad_out, x, weight, taps, cm, need_x, need_w)


@torch.library.custom_op("genmodels::masked_conv2d", mutates_args=())
def _op(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask_type: str, color_groups: int, backend: str
) -> Tensor:
    if _kernel_would_leak(x, weight, mask_type, color_groups, backend):
        y = masked_conv2d_reference(x, weight, bias, mask_type, color_groups)
        return y.contiguous(memory_format=torch.channels_last)
    return _conv_kernel(x, weight, bias, mask_type, color_groups, backend)


@_op.register_fake
def _(x, weight, bias, mask_type, color_groups, backend):
    return _channels_last_empty(x, weight.shape[0])


@torch.library.custom_op("genmodels::masked_conv2d_backward", mutates_args=())
def _backward_op(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    mask_type: str,
    color_groups: int,
    backend: str,
    need_input: bool,
    need_weight: bool,
) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_weight); a needless one is an empty [0] tensor."""
    return _conv_backward_kernel(
        grad_out, x, weight, mask_type, color_groups, backend, need_input, need_weight
    )


@_backward_op.register_fake
def _(grad_out, x, weight, mask_type, color_groups, backend, need_input, need_weight):
    gx = _channels_last_empty(x, x.shape[1]) if need_input else x.new_empty((0,))
    gw = torch.empty_like(weight, memory_format=torch.contiguous_format)
    return gx, gw if need_weight else weight.new_empty((0,))


def _conv_grads(ctx, grad_out, x, weight, backward=_backward_op):
    if torch.is_grad_enabled():
        gx, gw = reference_grads(
            ctx,
            lambda x, w: masked_conv2d_reference(x, w, None, ctx.mask_type, ctx.color_groups),
            (x, weight),
            grad_out,
        )
        gb = grad_out.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return gx, gw, gb
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx = gw = None
    if need_x or need_w:
        gx, gw = backward(
            grad_out, x, weight, ctx.mask_type, ctx.color_groups, ctx.backend, need_x, need_w
        )
    gb = grad_out.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
    return (gx if need_x else None), (gw if need_w else None), gb


def _setup_context(ctx, inputs, output):
    x, weight, bias, mask_type, color_groups, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.mask_type, ctx.color_groups, ctx.backend = mask_type, color_groups, backend


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    return (*_conv_grads(ctx, grad_out, x, weight), None, None, None)


_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's kernels and derivatives for eager calls, without the torch.library
    dispatch and autograd wrapper, which cost ~100 us a call: more than the kernels of a
    PixelCNN layer at 8x8. torch.compile traces the torch.library op instead."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask_type, color_groups, backend):
        _setup_context(ctx, (x, weight, bias, mask_type, color_groups, backend), None)
        return _conv_kernel(x, weight, bias, mask_type, color_groups, backend)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grads = _conv_grads(ctx, grad_out, x, weight, _conv_backward_kernel)
        return (*grads, None, None, None)


def _conv(x, weight, bias, mask_type, color_groups, backend):
    if torch.compiler.is_compiling():
        return _op(x, weight, bias, mask_type, color_groups, backend)
    if _kernel_would_leak(x, weight, mask_type, color_groups, backend):
        return masked_conv2d_reference(x, weight, bias, mask_type, color_groups)
    if backend == "native":
        # The extension's own autograd node: no Python in the backward pass.
        taps, cm = tap_plan(weight, mask_type, color_groups)
        return _backend.native_entry(OP, "autograd", x.device)(x, weight, bias, taps, cm)
    return _Eager.apply(x, weight, bias, mask_type, color_groups, backend)


@torch.library.custom_op("genmodels::masked_conv2d_gated", mutates_args=())
def _gated_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    addend: Tensor | None,
    mask_type: str,
    color_groups: int,
    backend: str,
) -> Tensor:
    """Conv + bias + addend + gate. Triton fuses all of it (the pre-activation is never
    stored); the native backend runs its convolution kernel, then the gate."""
    if backend == "reference" or _kernel_would_leak(x, weight, mask_type, color_groups, backend):
        y = masked_conv2d_gated_reference(x, weight, bias, addend, mask_type, color_groups)
        return y.contiguous(memory_format=torch.channels_last)
    if backend == "native":
        pre = _conv_kernel(x, weight, bias, mask_type, color_groups, backend).to(_acc(x.dtype))
        if addend is not None:
            pre = pre + addend.to(pre.dtype)
        y = gated_activation(pre, color_groups).to(x.dtype)
        return y.contiguous(memory_format=torch.channels_last)
    taps, cm = tap_plan(weight, mask_type, color_groups)
    from genkernels import masked_conv2d as kernels

    return kernels.forward(x, weight, bias, addend, taps, cm, gated_groups=color_groups)


@_gated_op.register_fake
def _(x, weight, bias, addend, mask_type, color_groups, backend):
    return _channels_last_empty(x, weight.shape[0] // 2)


def _gated_setup_context(ctx, inputs, output):
    x, weight, bias, addend, mask_type, color_groups, backend = inputs
    ctx.save_for_backward(x, weight, bias, addend)
    ctx.mask_type, ctx.color_groups, ctx.backend = mask_type, color_groups, backend


def _gated_backward(ctx, grad_out):
    x, weight, bias, addend = ctx.saved_tensors
    if torch.is_grad_enabled():
        grads = reference_grads(
            ctx,
            lambda x, w, b, a: masked_conv2d_gated_reference(
                x, w, b, a, ctx.mask_type, ctx.color_groups
            ),
            (x, weight, bias, addend),
            grad_out,
        )
        return (*grads, None, None, None)
    # Recompute the pre-activation (cheaper in memory than storing it), then the gate's
    # gradient in PyTorch, then the convolution's.
    with torch.enable_grad():
        pre = _op(x, weight, bias, ctx.mask_type, ctx.color_groups, ctx.backend).detach()
        if addend is not None:
            pre = pre + addend
        pre.requires_grad_(True)
        out = gated_activation(pre.to(_acc(pre.dtype)), ctx.color_groups)
        (grad_pre,) = torch.autograd.grad(out, pre, grad_out.to(out.dtype))
    gx, gw, gb = _conv_grads(ctx, grad_pre, x, weight)
    ga = None
    if ctx.needs_input_grad[3]:
        ga = grad_pre.sum_to_size(addend.shape)
    return gx, gw, gb, ga, None, None, None


_gated_op.register_autograd(_gated_backward, setup_context=_gated_setup_context)


# --- the public functions -----------------------------------------------------------------


def _autocast(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Under torch.autocast, the inputs in the autocast dtype, as conv2d gets them there."""
    first = tensors[0]
    device = first.device.type if isinstance(first, Tensor) else None
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    # Only floating tensors: anything else is left for the argument checks to name.
    return tuple(
        t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t for t in tensors
    )


def _check_args(x, weight, bias, mask_type, color_groups):
    _checks.check_floating(x, "x")
    if x.dim() != 4:
        raise RuntimeError(f"x must be a 4-D [N, C, H, W] tensor, got shape {list(x.shape)}")
    _checks.check_tensor(weight, "weight")
    if weight.dim() != 4:
        raise RuntimeError(
            f"weight must be a 4-D [C_out, C_in, k, k] tensor, got shape {list(weight.shape)}"
        )
    c_out, c_in, kh, kw = weight.shape
    if c_out < 1 or c_in < 1:
        # torch's conv2d fails on 0 output channels deep inside a backend's kernel call.
        raise ValueError(
            f"weight must have at least 1 output and 1 input channel, got shape "
            f"{list(weight.shape)} (out_channels={c_out}, in_channels={c_in})"
        )
    if kh != kw:
        raise RuntimeError(f"weight must have a square kernel, got {kh}x{kw}")
    check_kernel_size(kh, "weight's kernel size")
    _checks.check_like(weight, x, "weight", "x", shape=(c_out, x.shape[1], kh, kw))
    if bias is not None:
        _checks.check_like(bias, x, "bias", "x", shape=(c_out,))
    check_mask_type(mask_type)
    check_color_groups(color_groups, in_channels=c_in, out_channels=c_out)


def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    mask_type: str = "B",
    color_groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """Causally masked convolution: `conv2d(x, weight * mask, bias, padding=k // 2)`.

    Args:
        x: [N, C_in, H, W] input.
        weight: [C_out, C_in, k, k] with k odd; taps outside the mask are ignored and get
            zero gradient.
        bias: optional [C_out].
        mask_type: "A", "B" (PixelCNN), "VA", "VB", "HA", "HB" (Gated PixelCNN stacks);
            see the module docstring for the exact taps of each.
        color_groups: number of contiguous channel groups (3 for RGB) ordered at the
            center tap; must divide C_in and C_out.
        backend: "auto", "native", "triton" or "reference" (see genmodels.backends()).
    """
    x, weight, bias = _autocast(x, weight, bias)
    _check_args(x, weight, bias, mask_type, color_groups)
    which = _backend.resolve(backend, OP, x.device)
    if which == "reference":
        return masked_conv2d_reference(x, weight, bias, mask_type, color_groups)
    return _conv(x, weight, bias, mask_type, color_groups, which)


def masked_conv2d_gated(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    addend: Tensor | None = None,
    *,
    mask_type: str = "B",
    color_groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """Gated PixelCNN unit: `gated_activation(masked_conv2d(x, weight, bias) + addend)`.

    `addend` (optional) is broadcastable to [N, C_out, H, W], e.g. a per-sample class
    bias [N, C_out, 1, 1] or the vertical-to-horizontal term. Returns [N, C_out // 2, H, W].
    The Triton backend fuses bias, addend and gate into the convolution's epilogue; the
    other backends compose them.
    """
    x, weight, bias, addend = _autocast(x, weight, bias, addend)
    _check_args(x, weight, bias, mask_type, color_groups)
    c_out = weight.shape[0]
    if c_out % (2 * color_groups) != 0:
        raise ValueError(
            f"out_channels ({c_out}) must be divisible by 2 * color_groups ({2 * color_groups})"
        )
    n, _, h, w = x.shape
    if addend is not None:
        _checks.check_tensor(addend, "addend")
        if addend.device != x.device or addend.dtype != x.dtype:
            raise RuntimeError(
                f"addend has {addend.dtype} on {addend.device} but x has {x.dtype} on {x.device}"
            )
        try:
            torch.broadcast_shapes(addend.shape, (n, c_out, h, w))
            ok = addend.dim() == 4
        except RuntimeError:
            ok = False
        if not ok:
            raise RuntimeError(
                f"addend must be 4-D and broadcastable to {[n, c_out, h, w]}, "
                f"got {list(addend.shape)}"
            )
    which = _backend.resolve(backend, OP, x.device)
    if which == "reference":
        return masked_conv2d_gated_reference(x, weight, bias, addend, mask_type, color_groups)
    if which == "triton":
        return _gated_op(x, weight, bias, addend, mask_type, color_groups, which)
    pre = _conv(x, weight, bias, mask_type, color_groups, which)
    if addend is not None:
        pre = pre + addend
    return gate(pre, color_groups, backend=which)
