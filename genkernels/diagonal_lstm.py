"""Triton kernels of diagonal_lstm (spec: genmodels/ops/diagonal_lstm.py): one step per
anti-diagonal r + j = d, run by genkernels._lstm (a GEMM per step over the above and left
neighbours' h, then the fused Triton cell). The skew and the reverse mirror are only in
the plan's indices."""

from genkernels import _lstm


def plan(height: int, width: int, reverse: bool) -> _lstm.Plan:
    def at(r, j):
        return r * width + (width - 1 - j if reverse else j)

    begin, pos, tap_src, cell_src = [], [], [], []
    for d in range(height + width - 1):
        begin.append(len(pos))
        for r in range(max(0, d - width + 1), min(height - 1, d) + 1):
            j = d - r
            pos.append(at(r, j))
            tap_src += [at(r - 1, j) if r > 0 else -1, at(r, j - 1) if j > 0 else -1]
            cell_src.append(at(r, j - 1) if j > 0 else -1)
    begin.append(len(pos))
    return _lstm.Plan(height * width, 2, begin, pos, tap_src, cell_src)


def forward(gates_x, weight, bias, reverse: bool):
    return _lstm.forward(plan(*gates_x.shape[2:], reverse), gates_x, weight, bias)


def backward(grad_h, gates_x, weight, bias, h, c, reverse: bool):
    p = plan(*gates_x.shape[2:], reverse)
    return _lstm.backward(p, grad_h, gates_x, weight, bias, h, c)
