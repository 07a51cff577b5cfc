"""The USPS handwritten digits from the files it is commonly distributed as.

`load_usps(path)` reads 16x16 images with 256 levels and labels 0-9 from either

- the LIBSVM files ``usps`` (7291 training images) and ``usps.t`` (2007 test images),
  bz2-compressed (``usps.bz2``, ``usps.t.bz2``) or not: one image a line,
  ``label index:value ...`` with labels 1-10 for the digits 0-9, indices 1-256 in raster
  order and values in [-1, 1] (an index left out is 0, as in any LIBSVM file); a value v
  becomes the level ``round((v + 1) / 2 * 255)``. ``path`` is the folder holding them or
  the training file itself (the test file is its sibling with ``.t`` before ``.bz2``).
  A file must end with a newline: a text file cut in the middle of a line is reported as
  truncated (one cut between lines cannot be told from a shorter file);
- or the HDF5 layout ``usps.h5`` (``path`` is the file, or a folder holding it): groups
  ``train`` and ``test`` with datasets ``data`` ([N, 256], floats in [0, 1], or in [-1, 1]
  when any value is negative, or integers 0..255) and ``target`` ([N], 0-9). h5py is
  needed only for this layout and is imported then.

The validation split is a fixed random tenth of the training images, at most 700.
Missing, truncated or corrupt files raise an error naming the path and what was expected.
"""

from __future__ import annotations

import bz2
import os

import numpy as np
import torch

from genmodels.data.datasets import ImageDataset, Splits, split

SIDE = 16
PIXELS = SIDE * SIDE
VALIDATION = 700


def _libsvm_pair(path: str) -> tuple[str, str]:
    """(training file, test file) of the LIBSVM layout for `path` (a folder or the training
    file)."""

    def existing(base: str) -> str | None:
        for candidate in (base, base + ".bz2"):
            if os.path.isfile(candidate):
                return candidate
        return None

    if os.path.isdir(path):
        train = existing(os.path.join(path, "usps"))
        test = existing(os.path.join(path, "usps.t"))
        if train is None or test is None:
            missing = "usps[.bz2]" if train is None else "usps.t[.bz2]"
            raise FileNotFoundError(
                f"{os.path.join(path, missing)} not found: expected the USPS LIBSVM files "
                "usps and usps.t (bz2-compressed or not), or usps.h5"
            )
        return train, test
    stem, compressed = (path[:-4], True) if path.endswith(".bz2") else (path, False)
    test = stem + ".t" + (".bz2" if compressed else "")
    if not os.path.isfile(test):
        test_plain = existing(stem + ".t")
        if test_plain is None:
            raise FileNotFoundError(
                f"{test} not found: expected the USPS test file next to the training file {path}"
            )
        test = test_plain
    return path, test


def _read_text(path: str) -> str:
    try:
        if path.endswith(".bz2"):
            with bz2.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
        return raw.decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        what = "bz2-compressed " if path.endswith(".bz2") else ""
        raise ValueError(f"{path}: cannot be read as a {what}LIBSVM text file ({exc})") from exc


def read_libsvm(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(levels uint8 [N, 1, 16, 16], labels int64 [N] in 0..9) of one USPS LIBSVM file."""
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: empty (expected USPS images in LIBSVM format)")
    if not text.endswith("\n"):
        raise ValueError(f"{path}: truncated (the last line does not end with a newline)")
    lines = text.splitlines()
    values = np.zeros((len(lines), PIXELS), dtype=np.float64)
    labels = np.empty(len(lines), dtype=np.int64)
    for row, line in enumerate(lines):
        fields = line.split()
        where = f"{path}, line {row + 1}"
        try:
            label = float(fields[0])
            pairs = [field.split(":") for field in fields[1:]]
            index = np.array([int(p[0]) for p in pairs], dtype=np.int64)
            value = np.array([float(p[1]) for p in pairs], dtype=np.float64)
        except (IndexError, ValueError) as exc:
            raise ValueError(
                f"{where}: not 'label index:value ...' (LIBSVM format): {line[:60]!r}"
            ) from exc
        if label != int(label) or not 1 <= label <= 10:
            raise ValueError(f"{where}: label {fields[0]!r}, expected 1..10 (the digits 0..9)")
        if len(index) and (index.min() < 1 or index.max() > PIXELS or np.any(np.diff(index) <= 0)):
            raise ValueError(f"{where}: indices must increase within 1..{PIXELS}")
        if not np.all(np.abs(value) <= 1.0 + 1e-6):
            raise ValueError(f"{where}: pixel values must lie in [-1, 1]")
        labels[row] = int(label) - 1
        values[row, index - 1] = value
    levels = np.rint((np.clip(values, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return levels.reshape(-1, 1, SIDE, SIDE), labels


def read_h5(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (levels, labels), "test": (levels, labels)} of the usps.h5 layout."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(
            f"{path}: reading the usps.h5 layout needs h5py: pip install h5py"
        ) from exc
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for part in ("train", "test"):
                if part not in f or "data" not in f[part] or "target" not in f[part]:
                    raise ValueError(
                        f"{path}: expected groups 'train' and 'test' holding 'data' and "
                        f"'target' (the usps.h5 layout); '{part}' is missing or incomplete"
                    )
                data = np.asarray(f[part]["data"][()])
                target = np.asarray(f[part]["target"][()]).reshape(-1)
                out[part] = (_h5_levels(path, part, data, target), target.astype(np.int64))
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    return out


def _h5_levels(path, part, data, target) -> np.ndarray:
    where = f"{path}: {part}/data"
    if data.ndim != 2 or data.shape[1] != PIXELS or len(data) != len(target):
        raise ValueError(
            f"{where} has shape {list(data.shape)}, expected [N, {PIXELS}] with N = "
            f"{len(target)} (the length of {part}/target)"
        )
    if not np.issubdtype(target.dtype, np.integer) and not np.all(target == np.rint(target)):
        raise ValueError(f"{path}: {part}/target must hold the integer labels 0..9")
    if len(target) and (target.min() < 0 or target.max() > 9):
        raise ValueError(f"{path}: {part}/target must hold labels 0..9")
    if np.issubdtype(data.dtype, np.integer):
        if len(data) and (data.min() < 0 or data.max() > 255):
            raise ValueError(f"{where}: integer pixels must lie in 0..255")
        levels = data.astype(np.uint8)
    else:
        data = data.astype(np.float64)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{where}: pixel values must be finite")
        low = -1.0 if len(data) and data.min() < 0 else 0.0
        if len(data) and (data.min() < low - 1e-6 or data.max() > 1.0 + 1e-6):
            raise ValueError(f"{where}: float pixels must lie in [0, 1] (or [-1, 1])")
        levels = np.rint((np.clip(data, low, 1.0) - low) / (1.0 - low) * 255).astype(np.uint8)
    return levels.reshape(-1, 1, SIDE, SIDE)


def _h5_path(path: str) -> str | None:
    if os.path.isfile(path) and path.endswith((".h5", ".hdf5")):
        return path
    if os.path.isdir(path):
        candidate = os.path.join(path, "usps.h5")
        if os.path.isfile(candidate):
            return candidate
    return None


def load_usps(path: str) -> Splits:
    """USPS from `path` (see the module docstring): 16x16, 256 levels, labels 0-9."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no such file or folder (expected the USPS files usps and usps.t, "
            "bz2-compressed or not, or usps.h5)"
        )
    h5 = _h5_path(path)
    if h5 is not None:
        parts = read_h5(h5)
    else:
        train_file, test_file = _libsvm_pair(path)
        parts = {"train": read_libsvm(train_file), "test": read_libsvm(test_file)}

    def dataset(part: str) -> ImageDataset:
        images, labels = parts[part]
        return ImageDataset(
            torch.from_numpy(images.copy()), torch.from_numpy(labels), 256, f"usps/{part}"
        )

    train, test = dataset("train"), dataset("test")
    n_val = min(VALIDATION, len(train) // 10)
    held = split(train, (len(train) - n_val, n_val, 0))
    return Splits(held.train, held.val, test)
