import pytest
import torch

from genmodels import _backend

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def kernel_backends(device: str = "cpu") -> list:
    """Every non-reference backend, skipped (with the reason) where this install lacks it."""
    params = []
    for name, check in (
        ("native", _backend.native_available),
        ("triton", _backend.triton_available),
    ):
        ok, why = check(device)
        marks = [] if ok else [pytest.mark.skip(reason=why)]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def devices() -> list:
    cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    return [pytest.param("cpu", id="cpu"), pytest.param("cuda", marks=cuda, id="cuda")]


def tolerance(dtype: torch.dtype) -> dict:
    """assert_close tolerances for comparing a kernel with the reference in `dtype`."""
    return {
        torch.float16: dict(rtol=2e-3, atol=2e-3),
        torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
        torch.float32: dict(rtol=2e-5, atol=2e-5),
        torch.float64: dict(rtol=1e-10, atol=1e-10),
    }[dtype]


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values as `t`, in a non-contiguous view (every other element of a wider tensor)."""
    wide = torch.empty((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    out = wide[..., ::2]
    assert not out.is_contiguous() or t.numel() <= 1
    return out
