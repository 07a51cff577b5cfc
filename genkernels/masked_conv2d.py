"""Triton kernels of masked_conv2d (spec: genmodels/ops/masked_conv2d.py).

Implicit GEMM on channels-last tensors: a program owns BLOCK_M pixels x BLOCK_N output
channels and loops over the kept taps, which are compile-time constants (bits of TAPS,
bit ky * k + kx), so masked taps cost nothing; for each tap it walks the input channels
in BLOCK_K steps with tl.dot. Bias, an optional addend and the Gated PixelCNN gate run in
the epilogue. The input gradient is the same kernel on grad_out with the mirrored taps
and transposed weights; the weight gradient is a per-tap reduction over pixels.
"""

import torch
import triton
import triton.language as tl

from genkernels._utils import acc_dtype, next_power_of_2


@triton.jit
def _conv_kernel(
    x_ptr, w_ptr, cm_ptr, b_ptr, add_ptr, y_ptr,
    M, H, W, CIN, OUT_C, PER,
    sw_o, sw_i, sw_y, sw_x,
    sa_n, sa_c, sa_h, sa_w,
    K: tl.constexpr, TAPS: tl.constexpr, CENTER_MASKED: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_ADD: tl.constexpr, GATED: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < M
    j_ok = j < OUT_C
    img = m // (H * W)
    py = (m // W) % H
    px = m % W
    if GATED:  # output channel j of group g pairs conv channels a = g*2*PER + r, b = a + PER
        ca = (j // PER) * 2 * PER + j % PER
        cb = ca + PER
    else:
        ca = j
        cb = j
    acc_a = tl.zeros((BLOCK_M, BLOCK_N), ACC)
    acc_b = tl.zeros((BLOCK_M, BLOCK_N), ACC)
    for tap in tl.static_range(K * K):
        if (TAPS >> tap) & 1:
            dy = tap // K - K // 2
            dx = tap % K - K // 2
            yy = py + dy
            xx = px + dx
            ok = m_ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            row = (m + dy * W + dx) * CIN
            for k0 in range(0, CIN, BLOCK_K):
                ci = k0 + tl.arange(0, BLOCK_K)
                ci_ok = ci < CIN
                a_mask = ok[:, None] & ci_ok[None, :]
                a = tl.load(x_ptr + row[:, None] + ci[None, :], mask=a_mask, other=0.0)
                w_mask = ci_ok[:, None] & j_ok[None, :]
                w_off = ci[:, None] * sw_i + (tap // K) * sw_y + (tap % K) * sw_x
                wa = tl.load(w_ptr + w_off + ca[None, :] * sw_o, mask=w_mask, other=0.0)
                if UPCAST:
                    a = a.to(ACC)
                    wa = wa.to(ACC)
                if CENTER_MASKED and tap == (K // 2) * K + K // 2:
                    cm_off = ci[:, None]
                    cm = tl.load(cm_ptr + ca[None, :] * CIN + cm_off, mask=w_mask, other=0.0)
                    wa = tl.where(cm != 0, wa, 0.0)
                acc_a = tl.dot(a, wa, acc_a, input_precision=PRECISION, out_dtype=ACC)
                if GATED:
                    wb = tl.load(w_ptr + w_off + cb[None, :] * sw_o, mask=w_mask, other=0.0)
                    if UPCAST:
                        wb = wb.to(ACC)
                    if CENTER_MASKED and tap == (K // 2) * K + K // 2:
                        cm = tl.load(cm_ptr + cb[None, :] * CIN + cm_off, mask=w_mask, other=0.0)
                        wb = tl.where(cm != 0, wb, 0.0)
                    acc_b = tl.dot(a, wb, acc_b, input_precision=PRECISION, out_dtype=ACC)
    out_mask = m_ok[:, None] & j_ok[None, :]
    if HAS_BIAS:
        acc_a += tl.load(b_ptr + ca, mask=j_ok, other=0.0).to(ACC)[None, :]
        if GATED:
            acc_b += tl.load(b_ptr + cb, mask=j_ok, other=0.0).to(ACC)[None, :]
    if HAS_ADD:
        a_off = img[:, None] * sa_n + py[:, None] * sa_h + px[:, None] * sa_w
        acc_a += tl.load(add_ptr + a_off + ca[None, :] * sa_c, mask=out_mask, other=0.0).to(ACC)
        if GATED:
            acc_b += tl.load(add_ptr + a_off + cb[None, :] * sa_c, mask=out_mask, other=0.0).to(ACC)
    if GATED:
        out = (2.0 * tl.sigmoid(2.0 * acc_a) - 1.0) * tl.sigmoid(acc_b)
    else:
        out = acc_a
    tl.store(y_ptr + m[:, None] * OUT_C + j[None, :], out.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _weight_grad_kernel(
    x_ptr, g_ptr, taps_ptr, part_ptr,
    M, H, W, CIN, COUT, ROWS_PER_SPLIT,
    K: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    # part[s, co, ci, tap] = sum over pixels of split s of x[p + d_tap, ci] * g[p, co]
    t = tl.program_id(0)
    pid_io = tl.program_id(1)
    s = tl.program_id(2)
    n_o = tl.cdiv(COUT, BLOCK_O)
    ci = (pid_io // n_o) * BLOCK_I + tl.arange(0, BLOCK_I)
    co = (pid_io % n_o) * BLOCK_O + tl.arange(0, BLOCK_O)
    tap = tl.load(taps_ptr + t)
    dy = tap // K - K // 2
    dx = tap % K - K // 2
    acc = tl.zeros((BLOCK_I, BLOCK_O), ACC)
    start = s.to(tl.int64) * ROWS_PER_SPLIT
    for m0 in range(0, ROWS_PER_SPLIT, BLOCK_M):
        m = start + m0 + tl.arange(0, BLOCK_M)
        m_ok = (m < M) & (m0 + tl.arange(0, BLOCK_M) < ROWS_PER_SPLIT)
        yy = (m // W) % H + dy
        xx = m % W + dx
        ok = m_ok & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        xa = tl.load(
            x_ptr + ((m + dy * W + dx) * CIN)[:, None] + ci[None, :],
            mask=ok[:, None] & (ci < CIN)[None, :], other=0.0,
        )  # fmt: skip
        gb = tl.load(
            g_ptr + (m * COUT)[:, None] + co[None, :],
            mask=m_ok[:, None] & (co < COUT)[None, :], other=0.0,
        )  # fmt: skip
        if UPCAST:
            xa = xa.to(ACC)
            gb = gb.to(ACC)
        acc = tl.dot(tl.trans(xa), gb, acc, input_precision=PRECISION, out_dtype=ACC)
    kk = K * K
    s_off = s.to(tl.int64) * COUT * CIN * kk
    ptrs = part_ptr + s_off + co[None, :] * (CIN * kk) + ci[:, None] * kk + tap
    tl.store(ptrs, acc, mask=(ci < CIN)[:, None] & (co < COUT)[None, :])


def _interpret() -> bool:
    from genmodels._backend import triton_interpret

    return triton_interpret()


def _dot_config(dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """(upcast operands to the accumulator type, tl.dot input precision)."""
    if device.type != "cuda" or _interpret():
        return True, "ieee"  # the interpreter computes in numpy: no bfloat16 arithmetic
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return False, "tf32"
    return False, "ieee"


def _tap_bits(taps) -> int:
    bits = 0
    for t in taps:
        bits |= 1 << t
    return bits


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).contiguous()


def _blocks(m: int, cin: int, cout: int) -> tuple[int, int, int]:
    block_k = max(16, min(64, next_power_of_2(cin)))
    block_n = max(16, min(128, next_power_of_2(cout)))
    block_m = 64 if m <= 4096 else 128
    return block_m, block_n, block_k


def _conv(x_nhwc, weight, cm, bias, addend, taps, out_c, per, gated):
    n, h, w, cin = x_nhwc.shape
    k = weight.shape[2]
    m = n * h * w
    y = x_nhwc.new_empty((n, h, w, out_c))
    if m == 0 or out_c == 0:
        return y
    upcast, precision = _dot_config(x_nhwc.dtype, x_nhwc.device)
    block_m, block_n, block_k = _blocks(m, cin, out_c)
    if _interpret():
        block_m = 128  # fewer, larger programs: the interpreter pays per program
    sa = addend.stride() if addend is not None else (0, 0, 0, 0)
    grid = (triton.cdiv(m, block_m), triton.cdiv(out_c, block_n))
    _conv_kernel[grid](
        x_nhwc, weight, cm if cm is not None else weight, bias if bias is not None else weight,
        addend if addend is not None else weight, y,
        m, h, w, cin, out_c, per, *weight.stride(), *sa,
        K=k, TAPS=_tap_bits(taps), CENTER_MASKED=cm is not None,
        HAS_BIAS=bias is not None, HAS_ADD=addend is not None, GATED=gated,
        UPCAST=upcast, PRECISION=precision, ACC=acc_dtype(x_nhwc.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    return y


def forward(x, weight, bias, addend, taps, cm, *, gated_groups: int):
    """[N, C_out, H, W] (or [N, C_out / 2, H, W] when gated_groups > 0), channels_last."""
    n, _, h, w = x.shape
    c_out = weight.shape[0]
    if addend is not None:
        addend = addend.expand(n, c_out, h, w)  # broadcast dims get stride 0
    if bias is not None:
        bias = bias.contiguous()
    if gated_groups:
        out_c, per = c_out // 2, c_out // (2 * gated_groups)
    else:
        out_c, per = c_out, 1
    y = _conv(_nhwc(x), weight, cm, bias, addend, taps, out_c, per, gated_groups > 0)
    return y.permute(0, 3, 1, 2)


def backward(grad_out, x, weight, taps, cm, need_input: bool, need_weight: bool):
    c_out, c_in, k, _ = weight.shape
    g = _nhwc(grad_out)
    grad_x = x.new_empty((0,))
    grad_w = weight.new_empty((0,))
    if need_input:
        # grad_x: conv of grad_out over the mirrored taps; w'[ci, co, tap'] = weight[co, ci, tap]
        mirrored = sorted(k * k - 1 - t for t in taps)
        w_t = weight.transpose(0, 1).flip((2, 3))
        cm_t = cm.t().contiguous() if cm is not None else None
        grad_x = _conv(g, w_t, cm_t, None, None, mirrored, c_in, 1, False).permute(0, 3, 1, 2)
    if need_weight:
        grad_w = _weight_grad(_nhwc(x), g, weight, taps, cm)
    return grad_x, grad_w


def _weight_grad(x_nhwc, g, weight, taps, cm):
    c_out, c_in, k, _ = weight.shape
    n, h, w, _ = x_nhwc.shape
    m = n * h * w
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    if m == 0 or not taps:
        return torch.zeros_like(weight, memory_format=torch.contiguous_format)
    upcast, precision = _dot_config(x_nhwc.dtype, x_nhwc.device)
    block_m = 128 if _interpret() else 64
    block_i = max(16, min(64, next_power_of_2(c_in)))
    block_o = max(16, min(64, next_power_of_2(c_out)))
    tiles = triton.cdiv(c_in, block_i) * triton.cdiv(c_out, block_o)
    # split the pixel reduction so that the grid fills the device; partials summed after
    want = 1 if _interpret() else max(1, 264 // (len(taps) * tiles))
    splits = max(1, min(want, triton.cdiv(m, 4 * block_m)))
    rows = triton.cdiv(triton.cdiv(m, splits), block_m) * block_m
    splits = triton.cdiv(m, rows)
    part = torch.zeros((splits, c_out, c_in, k * k), dtype=acc, device=weight.device)
    tap_t = torch.tensor(taps, dtype=torch.int32, device=weight.device)
    _weight_grad_kernel[(len(taps), tiles, splits)](
        x_nhwc, g, tap_t, part, m, h, w, c_in, c_out, rows,
        K=k, UPCAST=upcast, PRECISION=precision, ACC=acc_dtype(weight.dtype),
        BLOCK_M=block_m, BLOCK_I=block_i, BLOCK_O=block_o,
    )  # fmt: skip
    grad = part.sum(0)
    if cm is not None:
        c = (k // 2) * k + k // 2
        grad[:, :, c] = torch.where(cm != 0, grad[:, :, c], 0)
    return grad.to(weight.dtype).view(c_out, c_in, k, k)
