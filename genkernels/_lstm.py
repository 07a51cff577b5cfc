"""Triton side of the PixelRNN recurrences (spec: genmodels/ops/row_lstm.py and
diagonal_lstm.py), shared by genkernels.row_lstm and genkernels.diagonal_lstm.

The recurrence runs in steps (rows, anti-diagonals) described by a plan, as the C++ engine
(csrc/common/lstm_recurrence_cpu.h) does: per step, the sources' h are gathered into
col [N, taps * C] (N = batch x positions of the step), the state-to-state product is one
GEMM (torch.mm: cuBLAS on GPU), and a Triton kernel fuses everything else of the step,
the gate activations and the cell, forward and backward. State is float32 (float64 for
float64 inputs) in position-major buffers [B * H * W, C]; backward keeps only h and c and
recomputes each step's gates with the same GEMM.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from genkernels._utils import acc_dtype, next_power_of_2


@dataclasses.dataclass
class Plan:
    """Steps of the recurrence over H * W positions: step s holds positions
    pos[begin[s]:begin[s + 1]], each with `taps` source positions (-1: none) and a cell
    predecessor (-1: none)."""

    positions: int
    taps: int
    begin: list[int]
    pos: list[int]
    tap_src: list[int]
    cell_src: list[int]


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 * _sigmoid(2.0 * x) - 1.0


@triton.jit
def _gates(
    pre_ptr, gx_ptr, bias_ptr, q, row, ch, mask, C, HAS_BIAS: tl.constexpr, ACC: tl.constexpr
):
    G = 4 * C
    gi = tl.load(pre_ptr + q * G + ch, mask=mask, other=0.0) + tl.load(
        gx_ptr + row * G + ch, mask=mask, other=0.0
    )
    gf = tl.load(pre_ptr + q * G + C + ch, mask=mask, other=0.0) + tl.load(
        gx_ptr + row * G + C + ch, mask=mask, other=0.0
    )
    gg = tl.load(pre_ptr + q * G + 2 * C + ch, mask=mask, other=0.0) + tl.load(
        gx_ptr + row * G + 2 * C + ch, mask=mask, other=0.0
    )
    go = tl.load(pre_ptr + q * G + 3 * C + ch, mask=mask, other=0.0) + tl.load(
        gx_ptr + row * G + 3 * C + ch, mask=mask, other=0.0
    )
    if HAS_BIAS:
        cm = ch < C
        gi += tl.load(bias_ptr + ch, mask=cm, other=0.0)
        gf += tl.load(bias_ptr + C + ch, mask=cm, other=0.0)
        gg += tl.load(bias_ptr + 2 * C + ch, mask=cm, other=0.0)
        go += tl.load(bias_ptr + 3 * C + ch, mask=cm, other=0.0)
    return gi.to(ACC), gf.to(ACC), gg.to(ACC), go.to(ACC)


@triton.jit
def _rows(pos_ptr, csrc_ptr, first, n, N, HW, C, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    q = tl.program_id(0).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    ch = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    qm = q < N
    i = q % n
    b = q // n
    p = tl.load(pos_ptr + first + i, mask=qm, other=0)
    cs = tl.load(csrc_ptr + first + i, mask=qm, other=-1)
    return (
        q[:, None],
        ch[None, :],
        (b * HW + p)[:, None],
        (b * HW + cs)[:, None],
        (cs >= 0)[:, None],
        qm[:, None] & (ch[None, :] < C),
    )


@triton.jit
def _cell_forward_kernel(
    pre_ptr, gx_ptr, bias_ptr, pos_ptr, csrc_ptr, h_ptr, c_ptr,
    first, n, N, HW, C,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    q, ch, row, prev, has_prev, mask = _rows(
        pos_ptr, csrc_ptr, first, n, N, HW, C, BLOCK_Q, BLOCK_C
    )
    gi, gf, gg, go = _gates(pre_ptr, gx_ptr, bias_ptr, q, row, ch, mask, C, HAS_BIAS, ACC)
    c_prev = tl.load(c_ptr + prev * C + ch, mask=mask & has_prev, other=0.0).to(ACC)
    c = _sigmoid(gf) * c_prev + _sigmoid(gi) * _tanh(gg)
    h = _sigmoid(go) * _tanh(c)
    tl.store(c_ptr + row * C + ch, c, mask=mask)
    tl.store(h_ptr + row * C + ch, h, mask=mask)


@triton.jit
def _cell_backward_kernel(
    pre_ptr, gx_ptr, bias_ptr, pos_ptr, csrc_ptr, c_ptr, dh_ptr, dc_ptr, dpre_ptr,
    first, n, N, HW, C,
    HAS_BIAS: tl.constexpr, ACC: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    q, ch, row, prev, has_prev, mask = _rows(
        pos_ptr, csrc_ptr, first, n, N, HW, C, BLOCK_Q, BLOCK_C
    )
    gi, gf, gg, go = _gates(pre_ptr, gx_ptr, bias_ptr, q, row, ch, mask, C, HAS_BIAS, ACC)
    i = _sigmoid(gi)
    f = _sigmoid(gf)
    g = _tanh(gg)
    o = _sigmoid(go)
    c_prev = tl.load(c_ptr + prev * C + ch, mask=mask & has_prev, other=0.0).to(ACC)
    tc = _tanh(tl.load(c_ptr + row * C + ch, mask=mask, other=0.0).to(ACC))
    dh = tl.load(dh_ptr + row * C + ch, mask=mask, other=0.0).to(ACC)
    dcell = tl.load(dc_ptr + row * C + ch, mask=mask, other=0.0).to(ACC) + dh * o * (1.0 - tc * tc)
    G = 4 * C
    tl.store(dpre_ptr + q * G + ch, dcell * g * i * (1.0 - i), mask=mask)
    tl.store(dpre_ptr + q * G + C + ch, dcell * c_prev * f * (1.0 - f), mask=mask)
    tl.store(dpre_ptr + q * G + 2 * C + ch, dcell * i * (1.0 - g * g), mask=mask)
    tl.store(dpre_ptr + q * G + 3 * C + ch, dh * tc * o * (1.0 - o), mask=mask)
    # Cell predecessors are distinct within a step: no two rows write one.
    pm = mask & has_prev
    dc_prev = tl.load(dc_ptr + prev * C + ch, mask=pm, other=0.0)
    tl.store(dc_ptr + prev * C + ch, dc_prev + dcell * f, mask=pm)


class _Steps:
    """The plan on the device, and each step's gather indices into the state rows
    [B * HW + 1, C] (the last row is zero: the source of taps outside the image)."""

    def __init__(self, plan: Plan, batch: int, device):
        self.plan = plan
        self.pos = torch.tensor(plan.pos, dtype=torch.int64, device=device)
        self.cell_src = torch.tensor(plan.cell_src, dtype=torch.int64, device=device)
        tap_src = torch.tensor(plan.tap_src, dtype=torch.int64, device=device).view(-1, plan.taps)
        zero_row = batch * plan.positions
        base = torch.arange(batch, dtype=torch.int64, device=device) * plan.positions
        self.index = []
        for s in range(len(plan.begin) - 1):
            src = tap_src[plan.begin[s] : plan.begin[s + 1]]  # [n, taps]
            idx = base[:, None, None] + src[None]
            self.index.append(torch.where(src[None] >= 0, idx, zero_row).reshape(-1))

    def __len__(self):
        return len(self.index)

    def span(self, s):
        return self.plan.begin[s], self.plan.begin[s + 1] - self.plan.begin[s]


def _boundary(gates_x, weight, bias):
    acc = torch.float64 if gates_x.dtype == torch.float64 else torch.float32
    b, g, h, w = gates_x.shape
    gx = gates_x.permute(0, 2, 3, 1).to(acc).contiguous().view(b * h * w, g)
    c = g // 4
    taps = weight.shape[2]
    wt = weight.permute(2, 1, 0).to(acc).contiguous().view(taps * c, g)
    bias_acc = None if bias is None else bias.to(acc).contiguous()
    return acc, gx, wt, bias_acc


def _image(t, like, channels):
    """Position-major rows [B * H * W, channels] -> [B, channels, H, W] in like's dtype,
    channels_last when like is (and is not also contiguous)."""
    b, _, h, w = like.shape
    cl = like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    fmt = torch.channels_last if cl else torch.contiguous_format
    out = torch.empty(b, channels, h, w, dtype=like.dtype, device=like.device, memory_format=fmt)
    out.copy_(t.view(b, h, w, channels).permute(0, 3, 1, 2))
    return out


def _blocks(C):
    return 32, min(64, next_power_of_2(C))


def forward(plan: Plan, gates_x, weight, bias):
    """(h like gates_x, h state, c state [B, H, W, C] float32/float64)."""
    b, g, height, width = gates_x.shape
    c = g // 4
    acc, gx, wt, bias_acc = _boundary(gates_x, weight, bias)
    rows = b * height * width
    h = torch.zeros(rows + 1, c, dtype=acc, device=gates_x.device)
    cell = torch.zeros(rows + 1, c, dtype=acc, device=gates_x.device)
    if rows > 0:
        steps = _Steps(plan, b, gates_x.device)
        block_q, block_c = _blocks(c)
        for s in range(len(steps)):
            first, n = steps.span(s)
            col = h.index_select(0, steps.index[s]).view(b * n, plan.taps * c)
            pre = col @ wt
            grid = (triton.cdiv(b * n, block_q), triton.cdiv(c, block_c))
            _cell_forward_kernel[grid](
                pre, gx, bias_acc if bias_acc is not None else pre, steps.pos, steps.cell_src,
                h, cell, first, n, b * n, plan.positions, c,
                HAS_BIAS=bias_acc is not None, ACC=acc_dtype(gates_x.dtype),
                BLOCK_Q=block_q, BLOCK_C=block_c,
            )  # fmt: skip
    h_state = h[:rows].view(b, height, width, c)
    c_state = cell[:rows].view(b, height, width, c)
    return _image(h_state.reshape(rows, c), gates_x, c), h_state.clone(), c_state.clone()


def backward(plan: Plan, grad_h, gates_x, weight, bias, h_state, c_state):
    """(grad gates_x like gates_x, grad weight, grad bias [4C])."""
    b, g, height, width = gates_x.shape
    c = g // 4
    acc, gx, wt, bias_acc = _boundary(gates_x, weight, bias)
    rows = b * height * width
    dgx = torch.zeros(rows, g, dtype=acc, device=gates_x.device)
    dwt = torch.zeros_like(wt)
    db = torch.zeros(g, dtype=acc, device=gates_x.device)
    if rows > 0:
        steps = _Steps(plan, b, gates_x.device)
        h = torch.cat([h_state.to(acc).reshape(rows, c), h_state.new_zeros(1, c, dtype=acc)])
        cell = c_state.to(acc).reshape(rows, c).contiguous()
        dh = torch.zeros(rows + 1, c, dtype=acc, device=gates_x.device)
        dh[:rows] = grad_h.permute(0, 2, 3, 1).reshape(rows, c)
        dc = torch.zeros(rows, c, dtype=acc, device=gates_x.device)
        block_q, block_c = _blocks(c)
        for s in range(len(steps) - 1, -1, -1):
            first, n = steps.span(s)
            col = h.index_select(0, steps.index[s]).view(b * n, plan.taps * c)
            pre = col @ wt
            dpre = torch.empty_like(pre)
            grid = (triton.cdiv(b * n, block_q), triton.cdiv(c, block_c))
            _cell_backward_kernel[grid](
                pre, gx, bias_acc if bias_acc is not None else pre, steps.pos, steps.cell_src,
                cell, dh, dc, dpre, first, n, b * n, plan.positions, c,
                HAS_BIAS=bias_acc is not None, ACC=acc_dtype(gates_x.dtype),
                BLOCK_Q=block_q, BLOCK_C=block_c,
            )  # fmt: skip
            # dpre rows are (batch, position of the step): scatter them to their positions.
            at = (
                torch.arange(b, device=gates_x.device)[:, None] * plan.positions
                + steps.pos[first : first + n][None]
            ).reshape(-1)
            dgx.index_copy_(0, at, dpre)
            dwt.addmm_(col.t(), dpre)
            db += dpre.sum(0)
            dh.index_add_(0, steps.index[s], (dpre @ wt.t()).view(-1, c))
    grad_w = dwt.view(plan.taps, c, g).permute(2, 1, 0).to(weight.dtype).contiguous()
    return _image(dgx, gates_x, g), grad_w, db.to(weight.dtype)
