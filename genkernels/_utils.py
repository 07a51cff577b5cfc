"""Helpers shared by the Triton launchers."""

import torch
import triton
import triton.language as tl

_TL_ACC = {torch.float64: tl.float64}


def acc_dtype(dtype: torch.dtype):
    """Triton accumulation type: float64 for float64 tensors, float32 otherwise."""
    return _TL_ACC.get(dtype, tl.float32)


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(max(1, n))


ROW_TILE = 4096


def row_tiling(rows: int, cols: int, tile: int = ROW_TILE) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, n_chunks) of a [rows, cols] view: tiles of about `tile` elements,
    several short rows per program, long rows split into n_chunks programs."""
    block_c = min(tile, next_power_of_2(cols))
    block_r = min(max(1, tile // block_c), next_power_of_2(rows))
    return block_r, block_c, triton.cdiv(cols, block_c)


@triton.jit
def row_tile(n_chunks, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Row indices, column indices (int64) and chunk number of this program's tile, for a
    1-D grid of cdiv(rows, BLOCK_R) * n_chunks programs."""
    pid = tl.program_id(0)
    chunk = pid % n_chunks
    r = (pid // n_chunks).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = chunk.to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    return r, c, chunk
