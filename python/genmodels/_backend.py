"""Which kernels this install has, and which backend runs a given call."""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

BACKENDS = ("auto", "native", "triton", "reference")
ENV_VAR = "GENMODELS_BACKEND"

# The GPU kernel `auto` picks per op, fastest first, from the benchmarks in benchmarks/.
AUTO_CUDA_PREFERENCE: dict[str, tuple[str, ...]] = {
    "reparameterize_kl": ("native", "triton"),
    # Not yet measured on a GPU (no device in the session that wrote it): native runs
    # cuBLAS on an active-tap im2col; Triton is the implicit GEMM.
    "masked_conv2d": ("native", "triton"),
    "gradient_penalty": ("native", "triton"),
    # Not yet measured on a GPU: native is one Philox call per four elements with vector
    # loads, and its eager path is a C++ autograd node rather than a Python Function.
    "dropout": ("native", "triton"),
}

REBUILD = (
    "rebuild it against the running torch in the genmodels source directory: "
    "`pip install --no-build-isolation -e .` (a plain `pip install .` builds against "
    "a freshly downloaded torch)"
)


def _load_extension(running: str = torch.__version__):
    """(genmodels._C, None), or (None, why it cannot be used): every op then still runs
    on the pure-PyTorch reference kernels."""
    # importlib, not `from genmodels import _C`: that runs while genmodels/__init__ is
    # still executing, and a missing submodule then reads "cannot import name '_C' from
    # partially initialized module 'genmodels' (most likely due to a circular import)".
    try:
        # Written by setup.py next to _C: the torch the extension was compiled against.
        built = importlib.import_module("genmodels._build_info").TORCH_VERSION
    except (ImportError, AttributeError):
        built = None  # built before the record existed, or the .so copied alone
    if built is not None and built != running:
        # torch's C++ ABI changes between versions: loading would fail on an undefined
        # symbol at best.
        return None, (
            f"genmodels._C was built against torch {built}, but torch {running} is "
            f"running; {REBUILD}"
        )
    try:
        return importlib.import_module("genmodels._C"), None
    except ModuleNotFoundError as exc:
        if exc.name != "genmodels._C":
            raise
        return None, (
            "genmodels._C is not built (no compiled extension next to genmodels/__init__.py); "
            "install with `pip install --no-build-isolation -e .`"
        )
    except ImportError as exc:
        text = str(exc)
        if "undefined symbol" in text:
            symbol = text.rsplit("undefined symbol:", 1)[-1].strip()
            return None, (
                f"genmodels._C does not match the running torch {running} (undefined symbol "
                f"{symbol}): it was compiled against another torch; {REBUILD}"
            )
        return None, f"genmodels._C failed to load ({text}); {REBUILD}"


_C, _C_ERROR = _load_extension()

_warned_reference = False


def native_available(device_type: str) -> tuple[bool, str | None]:
    if _C is None:
        return False, _C_ERROR
    if device_type == "cpu":
        return True, None
    if device_type == "cuda":
        if _C.has_cuda:
            return True, None
        return (
            False,
            "genmodels._C was built without CUDA (CPU-only torch, no nvcc, or FORCE_ONLY_CPU=1)",
        )
    return False, f"no native kernels for {device_type} tensors"


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# find_spec, not import: importing triton costs a second that most calls never need.
_TRITON_ERROR = None if importlib.util.find_spec("triton") else "triton is not installed"


def triton_available(device_type: str) -> tuple[bool, str | None]:
    if _TRITON_ERROR is not None:
        return False, _TRITON_ERROR
    if device_type == "cuda":
        return True, None
    if device_type == "cpu":
        if triton_interpret():
            return True, None
        return False, "Triton runs on CPU tensors only under TRITON_INTERPRET=1"
    return False, f"no Triton kernels for {device_type} tensors"


def backends() -> dict[str, dict[str, object]]:
    """What this install can run: {name: {"available": bool, "detail": str}}."""
    report = {}
    for name, (ok, why) in {
        "native_cpu": native_available("cpu"),
        "native_cuda": native_available("cuda"),
        "triton_cuda": triton_available("cuda"),
        "triton_cpu_interpreter": triton_available("cpu"),
    }.items():
        report[name] = {"available": ok, "detail": "ok" if ok else why}
    if not torch.cuda.is_available():
        # Kernels that cannot run here are not available, whatever is installed.
        device = (
            "no CUDA device is visible"
            if torch.version.cuda
            else f"torch {torch.__version__} is built without CUDA"
        )
        for name, what in (
            ("native_cuda", "built with CUDA"),
            ("triton_cuda", "triton is installed"),
        ):
            if report[name]["available"]:
                report[name] = {"available": False, "detail": f"{what}, but {device}"}
    return report


def _check_name(backend: object, where: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{where} must be one of {BACKENDS}, got {backend!r}")
    return backend


def _fall_back_to_reference(reason: str | None) -> str:
    global _warned_reference
    if not _warned_reference:
        _warned_reference = True
        warnings.warn(
            f"genmodels: using the pure-PyTorch reference kernels: {reason}",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"


def resolve(backend: object, op: str, device: torch.device) -> str:
    """The backend ("native", "triton" or "reference") that runs `op` on `device`."""
    backend = _check_name(backend, "backend")
    if backend == "auto":
        env = os.environ.get(ENV_VAR)
        if env:
            backend = _check_name(env, ENV_VAR)
    if backend == "reference":
        return backend
    if backend == "native":
        ok, why = native_available(device.type)
        if not ok:
            raise RuntimeError(f"backend='native' is not available for {op}: {why}")
        return backend
    if backend == "triton":
        ok, why = triton_available(device.type)
        if not ok:
            raise RuntimeError(f"backend='triton' is not available for {op}: {why}")
        return backend
    # auto
    if device.type == "cuda":
        reasons = []
        for candidate in AUTO_CUDA_PREFERENCE.get(op, ("native", "triton")):
            ok, why = (native_available if candidate == "native" else triton_available)("cuda")
            if ok:
                return candidate
            reasons.append(why)
        return _fall_back_to_reference("; ".join(r for r in reasons if r))
    ok, why = native_available(device.type)
    return "native" if ok else _fall_back_to_reference(why)


def native_entry(op: str, direction: str, device: torch.device):
    """The compiled entry point `{op}_{direction}_{cpu|cuda}` for `device`."""
    return getattr(_C, f"{op}_{direction}_{device.type}")
