"""Triton kernel of dropout (spec: genmodels/ops/dropout.py).

Each program owns BLOCK consecutive elements of x's storage, i.e. BLOCK // 4 counter
groups: one Philox call per group, whose four words are interleaved into element order
within each thread's registers.
"""

import torch
import triton
import triton.language as tl

from genkernels._philox import philox_group, philox_key

BLOCK = 1024


@triton.jit
def _dropout_kernel(
    x_ptr, out_ptr, n,
    seed_lo, seed_hi, off_lo, off_hi,
    threshold, scale, scale_f64: tl.float64,
    IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    g = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
    w0, w1, w2, w3 = philox_group(g, seed_lo, seed_hi, off_lo, off_hi)
    words = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))
    i = pid * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    # A float scale argument is float32; float64 needs its own (annotated) argument.
    if IS_F64:
        x = tl.load(x_ptr + i, mask=mask, other=0.0).to(tl.float64)
        kept = x * scale_f64
    else:
        x = tl.load(x_ptr + i, mask=mask, other=0.0).to(tl.float32)
        kept = x * scale
    keep = (words >> 8).to(tl.int32) >= threshold
    # x * 0 rather than 0, so that NaN and inf inputs give what x * keep / (1 - p) gives.
    out = tl.where(keep, kept, x * 0.0)
    tl.store(out_ptr + i, out.to(out_ptr.dtype.element_ty), mask=mask)


def forward(x, seed: int, offset: int, threshold: int, scale: float):
    """x * keep * scale over x's storage (x non-overlapping and dense); same strides out."""
    out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    grid = (triton.cdiv(n, BLOCK),)
    _dropout_kernel[grid](
        x, out, n, *philox_key(seed, offset), threshold, scale, scale,
        IS_F64=x.dtype == torch.float64, BLOCK=BLOCK,
    )  # fmt: skip
    return out
