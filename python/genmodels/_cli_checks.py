"""The `genmodels` command's argument checks and error messages.

Every check runs after parsing and before anything is loaded, built or written, and
raises ValueError with a message that names the flag; main() prints it as a usage error.
"""

from __future__ import annotations

import math
import os
import shlex

import torch

# Beyond a million epochs a run never ends (the default ones take 40 to 300); refused.
MAX_EPOCHS = 1_000_000
# One grid of 100000 images is already far larger than anyone looks at.
MAX_SAMPLES = 100_000
# np.random.seed, which training seeds too, takes 0 .. 2**32 - 1 and nothing else.
MAX_SEED = 2**32 - 1
DEBUG_ENV = "GENMODELS_DEBUG"


def check_args(args) -> None:
    """Refuses out-of-range numbers, unusable devices and unavailable backends."""
    for flag, name, low, high in (
        ("--epochs", "epochs", 1, MAX_EPOCHS),
        ("--batch-size", "batch_size", 1, None),
        ("--seed", "seed", 0, MAX_SEED),
        ("--n", "n", 1, MAX_SAMPLES),
        ("--repeat", "repeat", 1, None),
    ):
        value = getattr(args, name, None)
        if value is not None and (value < low or (high is not None and value > high)):
            if low == 1:
                bound = "a positive int" + (f" up to {high}" if high is not None else "")
            else:
                bound = f"an int from {low} to {high}"
            raise ValueError(f"{flag} must be {bound}, got {value}")
    for flag, name in (("--lr", "lr"), ("--truncation", "truncation")):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive finite number, got {value}")
    device = check_device(args.device) if getattr(args, "device", None) else None
    if hasattr(args, "backend"):
        # None: not given (a resumed run keeps its own); GENMODELS_BACKEND still applies.
        check_backend(args.backend or "auto", device or torch.device("cpu"))


def check_device(text: str, flag: str = "--device") -> torch.device:
    """The torch.device named by `text`, if this machine has it."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{flag} {text!r} is not a device (expected cpu, cuda or cuda:N)") from exc
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "no CUDA device is visible"
                if torch.version.cuda
                else f"this torch ({torch.__version__}) is built without CUDA"
            )
            raise ValueError(f"{flag} {text}: {why}; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{flag} {text}: only {count} CUDA device(s) are visible")
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"{flag} {text}: not usable here ({one_line(exc)})") from exc
    return device


def check_backend(backend: str, device: torch.device) -> None:
    """Refuses a backend (or GENMODELS_BACKEND) that cannot run on `device`."""
    from genmodels import _backend

    where = f"--backend {backend}"
    if backend == "auto" and os.environ.get(_backend.ENV_VAR):
        backend = os.environ[_backend.ENV_VAR]
        where = f"{_backend.ENV_VAR}={backend}"
        if backend not in _backend.BACKENDS:
            raise ValueError(f"{where}: must be one of {_backend.BACKENDS}")
    available = {"native": _backend.native_available, "triton": _backend.triton_available}
    if backend in available:
        ok, why = available[backend](device.type)
        if not ok:
            raise ValueError(f"{where} cannot run on {device.type}: {why}")


def one_line(exc: BaseException, limit: int = 600) -> str:
    """The exception's message on one line (torch's messages often span several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def run_dir(args) -> str:
    """The directory `genmodels train` writes to, as given by --out or --resume."""
    if getattr(args, "out", None):
        return args.out
    resume = getattr(args, "resume", None)
    if resume:
        return resume if os.path.isdir(resume) else os.path.dirname(resume) or "."
    return os.path.join("runs", args.model)


def interrupted(args) -> str:
    """What to print when Ctrl-C stops a command."""
    if args.command != "train":
        return "genmodels: interrupted"
    from genmodels.training.loop import CHECKPOINT

    folder = run_dir(args)
    if os.path.isfile(os.path.join(folder, CHECKPOINT)):
        return f"interrupted; resume with: genmodels train --resume {shlex.quote(folder)}"
    return f"interrupted before the first checkpoint; nothing to resume in {folder}"
