"""Triton kernels of the PixelCNN residual block (spec: genmodels/ops/pixelcnn_residual_block.py).

The convolutions are masked_conv2d's implicit GEMMs (the last one adds the residual input
in its epilogue); one elementwise kernel fuses ReLU with dropout (forward: r = relu(t) and
d = dropout(r), drawing dropout's Philox words for element i of the channels_last storage
as the dropout kernel does; backward: g * scale where the saved d is not 0, which reads both
masks off d without drawing again).
"""

import torch
import triton
import triton.language as tl

from genkernels import masked_conv2d as conv
from genkernels._philox import philox_group, philox_key

BLOCK = 1024
_CL = torch.channels_last


@triton.jit
def _relu_dropout_kernel(
    t_ptr, r_ptr, d_ptr, n,
    seed_lo, seed_hi, off_lo, off_hi,
    threshold, scale, scale_f64: tl.float64,
    BACKWARD: tl.constexpr, DROPOUT: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # forward: r = relu(t), d = dropout(r). backward (r is the saved dropout output or the
    # ReLU's input): d = t * scale where r > 0, else 0.
    pid = tl.program_id(0).to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    if IS_F64:
        t = tl.load(t_ptr + i, mask=mask, other=0.0).to(tl.float64)
    else:
        t = tl.load(t_ptr + i, mask=mask, other=0.0).to(tl.float32)
    if BACKWARD:
        r = tl.load(r_ptr + i, mask=mask, other=0.0)
        if IS_F64:
            value = tl.where(r <= 0, 0.0, t * scale_f64)  # torch's threshold_backward
        else:
            value = tl.where(r <= 0, 0.0, t * scale)
    else:
        value = tl.where(t > 0, t, 0.0)
        value = tl.where(t != t, t, value)  # NaN stays NaN, as in torch.relu
        tl.store(r_ptr + i, value.to(r_ptr.dtype.element_ty), mask=mask)
    if DROPOUT and not BACKWARD:
        g = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
        w0, w1, w2, w3 = philox_group(g, seed_lo, seed_hi, off_lo, off_hi)
        words = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))
        keep = (words >> 8).to(tl.int32) >= threshold
        if IS_F64:
            kept = value * scale_f64
        else:
            kept = value * scale
        value = tl.where(keep, kept, value * 0.0)
    tl.store(d_ptr + i, value.to(d_ptr.dtype.element_ty), mask=mask)


def _relu_dropout(t, r, backward: bool, drop):
    """drop: None, or (seed, offset, threshold, scale) of dropout's stream (backward uses
    the scale only)."""
    n = t.numel()
    out = torch.empty_like(t)
    if n == 0:
        return out
    key = philox_key(*drop[:2]) if drop is not None else (0, 0, 0, 0)
    threshold, scale = (drop[2], drop[3]) if drop is not None else (0, 1.0)
    _relu_dropout_kernel[(triton.cdiv(n, BLOCK),)](
        t, r, out, n, *key, threshold, scale, scale,
        BACKWARD=backward, DROPOUT=drop is not None, IS_F64=t.dtype == torch.float64,
        BLOCK=BLOCK,
    )  # fmt: skip
    return out


def _cl(t):
    return t.contiguous(memory_format=_CL)


def forward(x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, drop):
    """(out, r1, d), channels_last: r1 = relu(conv_1(relu(x))), d = dropout(relu(conv_2(r1)))."""
    x = _cl(x)
    a = _relu_dropout(x, torch.empty_like(x), False, None)  # relu(x)
    t1 = _cl(conv.forward(a, w1, b1, None, [0], cm1, gated_groups=0))
    r1 = _relu_dropout(t1, t1, False, None)
    t2 = _cl(conv.forward(r1, w2, b2, None, taps, cm2, gated_groups=0))
    d = _relu_dropout(t2, t2, False, drop)
    out = conv.forward(d, w3, b3, x, [0], cm3, gated_groups=0)
    return _cl(out), r1, d


def backward(grad, x, w1, w2, w3, r1, d, taps, cm1, cm2, cm3, drop, need):
    """The gradients of (x, w1, b1, w2, b2, w3, b3); None where `need` is False."""
    grads = [None] * 7
    g = _cl(grad)
    if need[5]:
        grads[5] = conv.backward(g, d, w3, [0], cm3, False, True)[1]
    if need[6]:
        grads[6] = g.sum((0, 2, 3))
    if not any(need[:5]):
        return grads
    gd = _cl(conv.backward(g, d, w3, [0], cm3, True, False)[0])
    g2 = _relu_dropout(gd, d, True, drop)
    if need[4]:
        grads[4] = g2.sum((0, 2, 3))
    need_r1 = need[0] or need[1] or need[2]
    g_r1, grads[3] = conv.backward(g2, r1, w2, taps, cm2, need_r1, need[3])
    if not need[3]:
        grads[3] = None
    if not need_r1:
        return grads
    g1 = _relu_dropout(_cl(g_r1), r1, True, None)
    if need[2]:
        grads[2] = g1.sum((0, 2, 3))
    x = _cl(x)
    a = _relu_dropout(x, torch.empty_like(x), False, None)
    if need[1]:
        grads[1] = conv.backward(g1, a, w1, [0], cm1, False, True)[1]
    if need[0]:
        gx = _cl(conv.backward(g1, a, w1, [0], cm1, True, False)[0])
        grads[0] = _relu_dropout(gx, x, True, None) + g
    return grads
