"""Triton kernels of gradient_penalty (spec: genmodels/ops/gradient_penalty.py).

The launchers take grads whose samples are dense blocks of `cols` elements (contiguous or
channels_last; genmodels.ops._checks.dense_rows). The forward kernel gives each program a
[BLOCK_R, BLOCK_C] tile of the [B, cols] view and writes one sum-of-squares partial per
row; a second kernel adds a row's partials in a fixed order and writes the norm and the
penalty. The backward kernel scales the same tiles by one coefficient per row.
`target` travels as two float32 words (hi + lo) so float64 inputs keep its full precision.
"""

import torch
import triton
import triton.language as tl

from genkernels._utils import acc_dtype, next_power_of_2

TILE = 4096


@triton.jit
def _excess(n, target_hi, target_lo, ONE_SIDED: tl.constexpr):
    d = (n - target_hi) - target_lo
    if ONE_SIDED:
        d = tl.maximum(d, 0.0)
    return d


@triton.jit
def _sumsq_kernel(
    g_ptr, part_ptr, rows, cols, n_chunks,
    ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    row_block = pid // n_chunks
    chunk = pid % n_chunks
    r = row_block.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = chunk.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    g = tl.load(g_ptr + r[:, None] * cols + c[None, :], mask=mask, other=0.0).to(ACC)
    tl.store(part_ptr + r * n_chunks + chunk, tl.sum(g * g, axis=1), mask=r < rows)


@triton.jit
def _finish_kernel(
    part_ptr, pen_ptr, norm_ptr, rows, n_chunks, target_hi, target_lo,
    ONE_SIDED: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    live = r < rows
    total = tl.zeros((BLOCK_R,), ACC)
    for j in range(n_chunks):
        total += tl.load(part_ptr + r * n_chunks + j, mask=live, other=0.0)
    n = tl.sqrt(total)
    d = _excess(n, target_hi, target_lo, ONE_SIDED)
    tl.store(norm_ptr + r, n, mask=live)
    tl.store(pen_ptr + r, (d * d).to(pen_ptr.dtype.element_ty), mask=live)


@triton.jit
def _backward_kernel(
    gp_ptr, gn_ptr, g_ptr, norm_ptr, out_ptr, rows, cols, n_chunks, target_hi, target_lo,
    ONE_SIDED: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    row_block = pid // n_chunks
    chunk = pid % n_chunks
    r = row_block.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = chunk.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    live = r < rows
    gp = tl.load(gp_ptr + r, mask=live, other=0.0).to(ACC)
    gn = tl.load(gn_ptr + r, mask=live, other=0.0).to(ACC)
    n = tl.load(norm_ptr + r, mask=live, other=0.0).to(ACC)
    d = _excess(n, target_hi, target_lo, ONE_SIDED)
    zero = n == 0.0
    coef = tl.where(zero, 0.0, (2.0 * gp * d + gn) / tl.where(zero, 1.0, n))
    mask = live[:, None] & (c[None, :] < cols)
    offs = r[:, None] * cols + c[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + offs, (g * coef[:, None]).to(out_ptr.dtype.element_ty), mask=mask)


def _tiling(rows: int, cols: int) -> tuple[int, int, int]:
    block_c = min(TILE, next_power_of_2(cols))
    block_r = min(max(1, TILE // block_c), next_power_of_2(rows))
    n_chunks = triton.cdiv(cols, block_c)
    return block_r, block_c, n_chunks


def _target_words(target: float) -> tuple[float, float]:
    hi = float(torch.tensor(target, dtype=torch.float32))
    return hi, float(torch.tensor(target - hi, dtype=torch.float32))


def forward(grads: torch.Tensor, target: float, one_sided: bool):
    """(penalty [B] in grads' dtype, norm [B] in the accumulation dtype)."""
    rows = grads.shape[0]
    acc = torch.float64 if grads.dtype == torch.float64 else torch.float32
    penalty = grads.new_empty((rows,))
    norm = grads.new_empty((rows,), dtype=acc)
    if rows == 0:
        return penalty, norm
    cols = grads.numel() // rows
    block_r, block_c, n_chunks = _tiling(rows, max(cols, 1))
    part = torch.empty((rows, n_chunks), dtype=acc, device=grads.device)
    grid = (triton.cdiv(rows, block_r) * n_chunks,)
    _sumsq_kernel[grid](
        grads, part, rows, cols, n_chunks,
        ACC=acc_dtype(grads.dtype), BLOCK_R=block_r, BLOCK_C=block_c,
    )  # fmt: skip
    fin_r = min(1024, next_power_of_2(rows))
    _finish_kernel[(triton.cdiv(rows, fin_r),)](
        part, penalty, norm, rows, n_chunks, *_target_words(target),
        ONE_SIDED=one_sided, ACC=acc_dtype(grads.dtype), BLOCK_R=fin_r,
    )  # fmt: skip
    return penalty, norm


def backward(grad_penalty, grad_norm, grads, norm, target: float, one_sided: bool):
    """grad_grads, laid out like grads."""
    grad_penalty, grad_norm = grad_penalty.contiguous(), grad_norm.contiguous()
    norm = norm.contiguous()
    out = torch.empty_like(grads)
    rows = grads.shape[0]
    if grads.numel() == 0:
        return out
    cols = grads.numel() // rows
    block_r, block_c, n_chunks = _tiling(rows, cols)
    grid = (triton.cdiv(rows, block_r) * n_chunks,)
    _backward_kernel[grid](
        grad_penalty, grad_norm, grads, norm, out, rows, cols, n_chunks,
        *_target_words(target),
        ONE_SIDED=one_sided, ACC=acc_dtype(grads.dtype), BLOCK_R=block_r, BLOCK_C=block_c,
    )  # fmt: skip
    return out
