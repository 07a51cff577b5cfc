"""Triton kernels of row_lstm (spec: genmodels/ops/row_lstm.py): one step per row, run by
genkernels._lstm (a GEMM per row over the row above's h, then the fused Triton cell)."""

from genkernels import _lstm


def plan(height: int, width: int, k: int) -> _lstm.Plan:
    """Row r's positions read row r - 1 at columns j + t - k // 2; the cell state comes
    from (r - 1, j)."""
    begin, pos, tap_src, cell_src = [], [], [], []
    pad = k // 2
    for r in range(height):
        begin.append(len(pos))
        for j in range(width):
            pos.append(r * width + j)
            for t in range(k):
                js = j + t - pad
                tap_src.append((r - 1) * width + js if r > 0 and 0 <= js < width else -1)
            cell_src.append((r - 1) * width + j if r > 0 else -1)
    begin.append(len(pos))
    return _lstm.Plan(height * width, k, begin, pos, tap_src, cell_src)


def forward(gates_x, weight, bias):
    return _lstm.forward(plan(*gates_x.shape[2:], weight.shape[2]), gates_x, weight, bias)


def backward(grad_h, gates_x, weight, bias, h, c):
    p = plan(*gates_x.shape[2:], weight.shape[2])
    return _lstm.backward(p, grad_h, gates_x, weight, bias, h, c)
