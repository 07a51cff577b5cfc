"""Checkpoints that are never half-written and resume exactly.

A checkpoint holds plain tensors and containers only, so it loads with
`torch.load(weights_only=True)`; the RNG states of torch (CPU and every CUDA device),
Python's `random` and NumPy are stored so a resumed run draws the same numbers.
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
import torch

from genmodels.training.rundir import atomic_write


def rng_state() -> dict:
    # The legacy global NumPy generator is the one user code draws from: save it too.
    np_state = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": _python_state_to_tensor(random.getstate()),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_python_state_from_tensor(state["python"]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )


def _python_state_to_tensor(state) -> dict:
    version, internal, gauss = state
    return {
        "version": version,
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }


def _python_state_from_tensor(d: dict):
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])


def save_checkpoint(obj: dict, path: str) -> None:
    """Writes `obj` to `path` atomically (see rundir.atomic_write). It is serialized in
    memory first, so a full disk fails in a plain write that says so, not inside torch.save."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getbuffer())


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return torch.load(path, map_location=map_location, weights_only=True)
