"""Argument checks shared by every op: each error names the argument it is about."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = ("none", "sum", "mean")


def check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_floating(t: torch.Tensor, name: str) -> None:
    check_tensor(t, name)
    if t.dtype not in FLOAT_DTYPES:
        raise RuntimeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def check_like(t: object, ref: torch.Tensor, name: str, ref_name: str, shape=None) -> None:
    """`t` is a tensor with `ref`'s dtype and device and the given shape (default `ref`'s)."""
    check_tensor(t, name)
    if t.device != ref.device:
        raise RuntimeError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")
    if t.dtype != ref.dtype:
        raise RuntimeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")
    expected = tuple(ref.shape) if shape is None else tuple(shape)
    if tuple(t.shape) != expected:
        raise RuntimeError(f"{name} must have shape {list(expected)}, got {list(t.shape)}")


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def reduce_batch(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Applies `reduction` to per-sample values of shape [B]."""
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.mean()
    return values


def check_real(value: object, name: str) -> float:
    """A finite Python (or 0-d tensor) real number, returned as a float."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def dense_rows(t: torch.Tensor) -> torch.Tensor:
    """`t` itself if every sample t[b] is one dense block of numel / B elements at offset
    b * numel / B (contiguous or channels_last tensors: per-sample reductions may then read
    it in place), else a contiguous copy. Kernels and fake kernels share this layout rule."""
    if t.is_contiguous():
        return t
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return t
    return t.contiguous()


def check_probability(value: object, name: str) -> float:
    """A number in [0, 1) (a dropout rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_unit_interval(value: object, name: str) -> float:
    """A real number in [0, 1] (Python or 0-d tensor), returned as a float."""
    value = check_real(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value
