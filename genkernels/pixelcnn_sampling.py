"""Triton kernel of the cached samplers' convolution at one position (spec:
genmodels/models/_sampling.py, `_Conv.at`).

out[b, o] = bias[o] + sum over the packed rows r of w[r, o] * x[b, ci, i + ky, j + kx + t]
where row r of run (ky, kx, length) is tap t = r // C_in, channel ci = r % C_in of that run
(genmodels.ops.pixelcnn_sampling.pack_dense). One program per (image, block of outputs).
"""

import torch
import triton
import triton.language as tl

from genkernels._utils import acc_dtype, next_power_of_2

BLOCK_K = 32


@triton.jit
def _conv_at_kernel(
    x_ptr, s_b, s_c, s_h, s_w,
    w_ptr, ldw, bias_ptr, out_ptr,
    run_ky_ptr, run_kx_ptr, run_len_ptr, runs, c_in, i, j, c_out,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < c_out
    acc = tl.zeros((BLOCK_N,), dtype=ACC)
    row0 = 0
    for r in range(runs):
        ky = tl.load(run_ky_ptr + r)
        kx = tl.load(run_kx_ptr + r)
        length = tl.load(run_len_ptr + r)
        for k0 in range(0, length, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < length
            tap = ks // c_in
            ci = ks % c_in
            offs = b * s_b + ci.to(tl.int64) * s_c + (i + ky) * s_h + (j + kx + tap) * s_w
            xv = tl.load(x_ptr + offs, mask=k_ok, other=0.0).to(ACC)
            w_offs = (row0 + ks).to(tl.int64)[:, None] * ldw + cols[None, :]
            wv = tl.load(w_ptr + w_offs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc += tl.sum(xv[:, None] * wv.to(ACC), axis=0)
        row0 += length
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(ACC)
    tl.store(out_ptr + b * c_out + cols, acc.to(out_ptr.dtype.element_ty), mask=col_ok)


def conv_at(x, weight, bias, runs, i: int, j: int):
    """[B, C_out] at padded position (i, j) of x [B, C_in, H + 2c, W + 2c] (any strides);
    weight [K, C_out] contiguous, runs an int64 [3, R] tensor (ky, kx, rows) on x's device."""
    n, c_in = x.shape[:2]
    c_out = weight.shape[1]
    out = torch.empty(n, c_out, dtype=x.dtype, device=x.device)
    if n == 0 or c_out == 0:
        return out
    block_n = min(128, next_power_of_2(c_out))
    grid = (n, triton.cdiv(c_out, block_n))
    _conv_at_kernel[grid](
        x, *x.stride(), weight, weight.stride(0), bias if bias is not None else weight, out,
        runs[0], runs[1], runs[2], runs.shape[1], c_in, i, j, c_out,
        HAS_BIAS=bias is not None, ACC=acc_dtype(x.dtype), BLOCK_K=BLOCK_K, BLOCK_N=block_n,
    )  # fmt: skip
    return out
