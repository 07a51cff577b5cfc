"""Triton kernels of reparameterize_kl (spec: genmodels/ops/reparameterize_kl.py).

Each program owns a [BLOCK_R, BLOCK_C] tile of the [B, D] view of mu and logvar: it
reads the tile once, writes z for every sample and one KL partial per row. Rows with more
than BLOCK_C columns are split over several programs whose partials are summed after.
"""

import torch
import triton
import triton.language as tl

from genkernels._philox import philox_key, philox_normal
from genkernels._utils import acc_dtype, row_tile, row_tiling


@triton.jit
def _forward_kernel(
    mu_ptr, lv_ptr, eps_ptr, z_ptr, kl_ptr, part_ptr,
    rows, cols, n_chunks,
    seed_lo, seed_hi, off_lo, off_hi,
    num_samples,
    HAS_EPS: tl.constexpr, SPLIT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    r, c, chunk = row_tile(n_chunks, BLOCK_R, BLOCK_C)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    base = r[:, None] * cols + c[None, :]
    mu = tl.load(mu_ptr + base, mask=mask, other=0.0).to(ACC)
    lv = tl.load(lv_ptr + base, mask=mask, other=0.0).to(ACC)
    sigma = tl.exp(0.5 * lv)
    terms = tl.where(mask, tl.exp(lv) + mu * mu - 1.0 - lv, 0.0)
    part = tl.sum(terms, axis=1)
    per_sample = rows * cols
    for s in range(num_samples):
        idx = s * per_sample + base
        if HAS_EPS:
            noise = tl.load(eps_ptr + idx, mask=mask, other=0.0).to(ACC)
        else:
            noise = philox_normal(idx, seed_lo, seed_hi, off_lo, off_hi).to(ACC)
        tl.store(z_ptr + idx, (mu + noise * sigma).to(z_ptr.dtype.element_ty), mask=mask)
    if SPLIT:
        tl.store(part_ptr + r * n_chunks + chunk, part, mask=r < rows)
    else:
        tl.store(kl_ptr + r, (0.5 * part).to(kl_ptr.dtype.element_ty), mask=r < rows)


@triton.jit
def _backward_kernel(
    gz_ptr, gkl_ptr, mu_ptr, lv_ptr, eps_ptr, gmu_ptr, glv_ptr,
    rows, cols, n_chunks,
    seed_lo, seed_hi, off_lo, off_hi,
    num_samples,
    HAS_EPS: tl.constexpr, ACC: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    r, c, chunk = row_tile(n_chunks, BLOCK_R, BLOCK_C)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    base = r[:, None] * cols + c[None, :]
    mu = tl.load(mu_ptr + base, mask=mask, other=0.0).to(ACC)
    lv = tl.load(lv_ptr + base, mask=mask, other=0.0).to(ACC)
    gkl = tl.load(gkl_ptr + r, mask=r < rows, other=0.0).to(ACC)[:, None]
    g_sum = tl.zeros((BLOCK_R, BLOCK_C), ACC)
    g_noise = tl.zeros((BLOCK_R, BLOCK_C), ACC)
    per_sample = rows * cols
    for s in range(num_samples):
        idx = s * per_sample + base
        if HAS_EPS:
            noise = tl.load(eps_ptr + idx, mask=mask, other=0.0).to(ACC)
        else:
            noise = philox_normal(idx, seed_lo, seed_hi, off_lo, off_hi).to(ACC)
        g = tl.load(gz_ptr + idx, mask=mask, other=0.0).to(ACC)
        g_sum += g
        g_noise += g * noise
    sigma = tl.exp(0.5 * lv)
    grad_mu = g_sum + gkl * mu
    grad_lv = 0.5 * (g_noise * sigma + gkl * (tl.exp(lv) - 1.0))
    tl.store(gmu_ptr + base, grad_mu.to(gmu_ptr.dtype.element_ty), mask=mask)
    tl.store(glv_ptr + base, grad_lv.to(glv_ptr.dtype.element_ty), mask=mask)


def forward(mu, logvar, eps, seed: int, offset: int, num_samples: int):
    mu, logvar = mu.contiguous(), logvar.contiguous()
    eps = eps.contiguous() if eps is not None else None
    rows = mu.shape[0]
    cols = mu.numel() // rows if rows else 0
    z = mu.new_empty((num_samples, *mu.shape))
    kl = mu.new_empty((rows,))
    if rows == 0:
        return z, kl
    if cols == 0:
        return z, kl.zero_()
    block_r, block_c, n_chunks = row_tiling(rows, cols)
    split = n_chunks > 1
    acc = torch.float64 if mu.dtype == torch.float64 else torch.float32
    part = torch.empty((rows, n_chunks), dtype=acc, device=mu.device) if split else kl
    grid = (triton.cdiv(rows, block_r) * n_chunks,)
    _forward_kernel[grid](
        mu, logvar, eps if eps is not None else mu, z, kl, part,
        rows, cols, n_chunks, *philox_key(seed, offset), num_samples,
        HAS_EPS=eps is not None, SPLIT=split, ACC=acc_dtype(mu.dtype),
        BLOCK_R=block_r, BLOCK_C=block_c,
    )  # fmt: skip
    if split:
        kl.copy_(0.5 * part.sum(dim=1))
    return z, kl


def backward(grad_z, grad_kl, mu, logvar, eps, seed: int, offset: int, num_samples: int):
    mu, logvar = mu.contiguous(), logvar.contiguous()
    grad_z, grad_kl = grad_z.contiguous(), grad_kl.contiguous()
    eps = eps.contiguous() if eps is not None else None
    grad_mu, grad_logvar = torch.empty_like(mu), torch.empty_like(logvar)
    rows = mu.shape[0]
    cols = mu.numel() // rows if rows else 0
    if rows == 0 or cols == 0:
        return grad_mu, grad_logvar
    block_r, block_c, n_chunks = row_tiling(rows, cols)
    grid = (triton.cdiv(rows, block_r) * n_chunks,)
    _backward_kernel[grid](
        grad_z, grad_kl, mu, logvar, eps if eps is not None else mu, grad_mu, grad_logvar,
        rows, cols, n_chunks, *philox_key(seed, offset), num_samples,
        HAS_EPS=eps is not None, ACC=acc_dtype(mu.dtype),
        BLOCK_R=block_r, BLOCK_C=block_c,
    )  # fmt: skip
    return grad_mu, grad_logvar
