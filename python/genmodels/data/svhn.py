"""SVHN (cropped digits) from its MATLAB files.

`load_svhn(directory)` reads ``train_32x32.mat`` and ``test_32x32.mat`` (``extra_32x32.mat``
is not used) with ``scipy.io.loadmat``, which parses the MATLAB 5 format and runs nothing
from the file: ``X`` is uint8 [32, 32, 3, N], ``y`` is [N, 1] with labels 1-10, where 10
stands for the digit 0. Images come out as RGB [N, 3, 32, 32] with 256 levels (for the
SVHN -> MNIST protocol `genmodels adapt --grayscale` converts them to one channel). The
validation split is a fixed random 5000 of the training images (a tenth when fewer).
A missing, truncated or corrupt file raises an error naming the path and what was expected.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from genmodels.data.datasets import ImageDataset, Splits, split

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
VALIDATION = 5000


def read_mat(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N] in 0..9) of one SVHN .mat file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: expected an SVHN file (X [32, 32, 3, N], y)")
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise ImportError("reading SVHN needs scipy: pip install scipy") from exc
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except NotImplementedError as exc:  # MATLAB 7.3 (HDF5) files
        raise ValueError(f"{path}: a MATLAB 7.3 file; SVHN is distributed as MATLAB 5") from exc
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... on bad bytes
        raise ValueError(
            f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})"
        ) from exc
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables X and y (the SVHN layout)")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(
            f"{path}: X has shape {list(x.shape)} and y {len(y)} labels; expected X "
            "[32, 32, 3, N] and N labels"
        )
    if x.dtype != np.uint8:
        raise ValueError(f"{path}: X must be uint8 pixels, got {x.dtype}")
    if len(y) and (not np.all(y == np.rint(y)) or y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: y must hold the labels 1..10 (10 stands for the digit 0)")
    labels = y.astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def load_svhn(directory: str) -> Splits:
    """SVHN's train and test files under `directory`: RGB 32x32, 256 levels, labels 0-9."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{directory}: not a directory (expected train_32x32.mat and test_32x32.mat)"
        )
    parts = {}
    for part, name in FILES.items():
        images, labels = read_mat(os.path.join(directory, name))
        parts[part] = ImageDataset(
            torch.from_numpy(images), torch.from_numpy(labels), 256, f"svhn/{part}"
        )
    train = parts["train"]
    n_val = min(VALIDATION, len(train) // 10)
    held = split(train, (len(train) - n_val, n_val, 0))
    return Splits(held.train, held.val, parts["test"])
