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
