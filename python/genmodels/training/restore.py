"""Models rebuilt from a run's checkpoint (for `genmodels sample` and `evaluate`)."""

from __future__ import annotations

import os

from torch import nn

from genmodels.training.checkpoint import load_checkpoint
from genmodels.training.loop import CHECKPOINT
from genmodels.training.tasks import TASKS


def checkpoint_path(path: str) -> str:
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def restore(path: str, map_location="cpu", best: bool = True) -> tuple[nn.Module, dict]:
    """(model in eval mode, checkpoint); the best-on-validation weights unless best=False."""
    ckpt = load_checkpoint(checkpoint_path(path), map_location=map_location)
    kind = ckpt.get("model_kind")
    if kind not in TASKS:
        raise ValueError(f"{path}: unknown model kind {kind!r} (expected one of {sorted(TASKS)})")
    weights = ckpt["best_model"] if best and ckpt.get("best_model") else ckpt["model"]
    try:
        model = TASKS[kind].model_class(**ckpt["model_config"])
        model.load_state_dict(weights)
    except (TypeError, ValueError, RuntimeError) as exc:
        # load_state_dict's message is a header line, then one line per mismatch.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = " ".join(lines[:2]) or type(exc).__name__
        raise ValueError(
            f"{path}: its weights and settings do not make a {kind} model ({detail}); "
            "the checkpoint is damaged or was written by another genmodels version"
        ) from exc
    return model.eval(), ckpt
