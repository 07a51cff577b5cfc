"""Readers for each data source. Each returns Splits of integer-level images."""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import zlib

import numpy as np
import torch

from genmodels.data.datasets import ImageDataset, Splits, split

DIGITS_SPLIT = (1000, 350, 447)
MNIST_VALIDATION = 5000
CIFAR_VALIDATION = 5000


def load_digits() -> Splits:
    """scikit-learn's 8x8 handwritten digits: 1797 images, 17 gray levels (0..16)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise ImportError(
            "the embedded digits data set ships inside scikit-learn: pip install scikit-learn"
        ) from exc
    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return split(ImageDataset(images, labels, levels=17, name="digits"), DIGITS_SPLIT)


# --- MNIST ------------------------------------------------------------------------------

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find(directory: str, name: str, what: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{os.path.join(directory, name)}[.gz] not found: expected {what}")


def _read_bytes(path: str) -> bytes:
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError, zlib.error) as exc:
            # BadGzipFile (an OSError): not gzip; zlib.error: a corrupt stream;
            # EOFError: a gzip file cut short.
            reason = str(exc) or type(exc).__name__
            raise ValueError(
                f"{path}: cannot be read as gzip ({reason}; expected a gzipped IDX file)"
            ) from exc
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def read_idx(path: str, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `dims` dimensions (LeCun's MNIST format)."""
    raw = _read_bytes(path)
    if len(raw) < 4 + 4 * dims:
        raise ValueError(f"{path}: truncated IDX header (expected {dims} dimensions)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != dims:
        raise ValueError(
            f"{path}: not an IDX file of unsigned bytes with {dims} dimensions "
            f"(magic {raw[:4].hex()}, expected 000008{dims:02x})"
        )
    shape = struct.unpack(f">{dims}I", raw[4 : 4 + 4 * dims])
    # Python integers: np.prod wraps around in int64 for a header such as 2^31 x 2^31 x 4.
    expected = math.prod(shape) + 4 + 4 * dims
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes, expected {expected} for the header's shape {shape}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(directory: str, *, binarize: bool = False) -> Splits:
    """MNIST from its four IDX files (gzipped or not): 256 levels, or 2 with `binarize`."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory (expected the MNIST IDX files)")
    arrays = {}
    for key, name in _MNIST_FILES.items():
        dims = 3 if key.endswith("images") else 1
        arrays[key] = read_idx(_find(directory, name, f"the MNIST {key.replace('_', ' ')}"), dims)
    for part in ("train", "test"):
        if len(arrays[f"{part}_images"]) != len(arrays[f"{part}_labels"]):
            raise ValueError(f"{directory}: MNIST {part} images and labels differ in count")

    def dataset(part: str) -> ImageDataset:
        images = torch.from_numpy(arrays[f"{part}_images"].copy()).unsqueeze(1)
        if binarize:
            images = (images >= 128).to(torch.uint8)
        labels = torch.from_numpy(arrays[f"{part}_labels"].astype(np.int64))
        return ImageDataset(images, labels, levels=2 if binarize else 256, name=f"mnist/{part}")

    return _hold_out(dataset("train"), dataset("test"), MNIST_VALIDATION)


def _hold_out(train: ImageDataset, test: ImageDataset, n_val: int) -> Splits:
    """Splits a fixed random validation set off `train`."""
    n_val = min(n_val, len(train) // 10)
    parts = split(train, (len(train) - n_val, n_val, 0))
    return Splits(parts.train, parts.val, test)


# --- CIFAR-10 ---------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of numpy arrays and lists) and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: expected a CIFAR-10 python batch")
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: not a CIFAR-10 python batch "
            f"(a pickled dict with b'data' and b'labels'): {exc}"
        ) from exc
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ValueError(
            f"{path}: expected data [N, 3072] and N labels, "
            f"got data {list(data.shape)} and labels {list(labels.shape)}"
        )
    # Casting would wrap silently (773 -> 5, -133 -> 123): only integers in range pass.
    data = _integers_in_range(data, 0, 255, path, "pixel values (uint8)")
    labels = _integers_in_range(labels, 0, 9, path, "labels (CIFAR-10 classes 0..9)")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _integers_in_range(values: np.ndarray, low: int, high: int, path: str, what: str):
    if values.size == 0:
        return values
    if values.dtype.kind not in "iu":
        raise ValueError(f"{path}: {what} must be integers, got dtype {values.dtype}")
    if values.size and (values.min() < low or values.max() > high):
        raise ValueError(
            f"{path}: {what} must lie in {low}..{high}, got {values.min()}..{values.max()}"
        )
    return values


def load_cifar10(directory: str) -> Splits:
    """CIFAR-10 from its python batches (data_batch_1..5, test_batch): 256 levels."""
    nested = os.path.join(directory, "cifar-10-batches-py")
    if os.path.isdir(nested):
        directory = nested
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory (expected CIFAR-10 batches)")
    train = [_read_cifar_batch(os.path.join(directory, f"data_batch_{i}")) for i in range(1, 6)]
    test = _read_cifar_batch(os.path.join(directory, "test_batch"))

    def dataset(parts, name):
        images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        return ImageDataset(images, labels, levels=256, name=name)

    return _hold_out(
        dataset(train, "cifar10/train"), dataset([test], "cifar10/test"), CIFAR_VALIDATION
    )


# --- image folders ----------------------------------------------------------------------

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_folder(directory: str) -> Splits:
    """Images of one size under `directory`, 256 levels; class labels from subfolder names
    (sorted), or all 0 for a flat folder. Split 80/10/10 with a fixed seed."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError("reading image folders needs Pillow: pip install pillow") from exc
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory (expected image files)")
    entries = []
    classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    # Images directly inside are one class, used only when there are no class folders.
    sources = [(i, c) for i, c in enumerate(classes)] if classes else [(0, "")]
    for label, sub in sources:
        folder = os.path.join(directory, sub)
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(_IMAGE_EXTENSIONS):
                entries.append((os.path.join(folder, name), label))
    if not entries:
        raise FileNotFoundError(f"{directory}: no image files ({', '.join(_IMAGE_EXTENSIONS)})")
    arrays, labels, mode, size = [], [], None, None
    for path, label in entries:
        try:
            with Image.open(path) as img:
                img.load()
                if mode is None:
                    mode = "L" if img.mode in ("1", "L", "P", "LA", "I", "I;16") else "RGB"
                    size = img.size
                if img.size != size:
                    raise ValueError(
                        f"{path}: size {img.size}, expected {size} like {entries[0][0]}"
                    )
                arrays.append(np.asarray(img.convert(mode), dtype=np.uint8))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from exc
        labels.append(label)
    images = torch.from_numpy(np.stack(arrays))
    images = images.unsqueeze(1) if mode == "L" else images.permute(0, 3, 1, 2).contiguous()
    data = ImageDataset(images, torch.tensor(labels), levels=256, name="folder")
    n = len(data)
    n_val = n_test = max(1, n // 10) if n >= 10 else 0
    return split(data, (n - n_val - n_test, n_val, n_test))
