"""A source and a target data set made into one domain pair: one image size, one channel
count, one number of levels, the same classes. Every check runs before any training.

- ``image_size=N`` resizes both domains to NxN: bilinear interpolation with antialiasing
  (``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
  align_corners=False)``, which averages over the source pixels when shrinking), on the
  levels as floats, then rounded back to integer levels (re-quantised) and clamped.
- ``grayscale=True`` turns RGB into one channel with the ITU-R BT.601 luma weights
  (0.299 R + 0.587 G + 0.114 B), rounded to levels (SVHN -> MNIST).
- Two different numbers of levels (e.g. the 17 of the digits and the 256 of MNIST) are
  mapped onto the larger one: level v of L becomes round(v * (L' - 1) / (L - 1)).
- ``source_size``/``target_size`` keep that many training images, a fixed random subset
  (the paper's protocol uses 2000 MNIST and 1800 USPS images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genmodels.data import ImageDataset, Splits

SUBSET_SEED = 0
LUMA = (0.299, 0.587, 0.114)


def _map(splits: Splits, fn) -> Splits:
    return Splits(*(fn(getattr(splits, part)) for part in ("train", "val", "test")))


def _with_images(data: ImageDataset, images: torch.Tensor, levels: int) -> ImageDataset:
    return ImageDataset(images, data.labels, levels, data.name)


def resize(data: ImageDataset, size: int) -> ImageDataset:
    """Bilinear with antialiasing, re-quantised to the data's levels."""
    if data.images.shape[-2:] == (size, size):
        return data
    top = data.levels - 1
    out = []
    for chunk in data.images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
        out.append(x.round().clamp(0, top).to(torch.uint8 if top < 256 else torch.int16))
    images = torch.cat(out) if out else data.images.new_zeros((0, data.images.shape[1], size, size))
    return _with_images(data, images, data.levels)


def to_grayscale(data: ImageDataset) -> ImageDataset:
    channels = data.images.shape[1]
    if channels == 1:
        return data
    if channels != 3:
        raise ValueError(f"{data.name}: --grayscale converts RGB images, these have {channels}")
    weights = torch.tensor(LUMA).view(1, 3, 1, 1)
    gray = (data.images.float() * weights).sum(1, keepdim=True).round()
    return _with_images(data, gray.clamp(0, data.levels - 1).to(data.images.dtype), data.levels)


def requantize(data: ImageDataset, levels: int) -> ImageDataset:
    if data.levels == levels:
        return data
    scaled = (data.images.float() * ((levels - 1) / (data.levels - 1))).round()
    dtype = torch.uint8 if levels <= 256 else torch.int32
    return _with_images(data, scaled.to(dtype), levels)


def subset(data: ImageDataset, n: int | None, flag: str) -> ImageDataset:
    if n is None:
        return data
    if n > len(data):
        raise ValueError(f"{flag} {n}: the training split has only {len(data)} images")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(SUBSET_SEED))
    return data.subset(order[:n], data.name)


def _classes(splits: Splits) -> set[int]:
    return {
        int(c) for part in (splits.train, splits.val, splits.test) for c in part.labels.unique()
    }


def _describe(splits: Splits) -> str:
    c, h, w = splits.train.shape
    return f"{c}x{h}x{w}"


def make_pair(
    source: Splits,
    target: Splits,
    *,
    image_size: int | None = None,
    grayscale: bool = False,
    source_size: int | None = None,
    target_size: int | None = None,
) -> tuple[Splits, Splits]:
    """(source, target) with one image shape and one number of levels, checked."""
    if grayscale:
        source, target = _map(source, to_grayscale), _map(target, to_grayscale)
    if image_size is not None:
        source = _map(source, lambda d: resize(d, image_size))
        target = _map(target, lambda d: resize(d, image_size))
    s_shape, t_shape = source.train.shape, target.train.shape
    if s_shape[1:] != t_shape[1:]:
        raise ValueError(
            f"the source images are {_describe(source)} and the target images "
            f"{_describe(target)}: give --image-size N to resize both to NxN"
        )
    if s_shape[0] != t_shape[0]:
        raise ValueError(
            f"the source images have {s_shape[0]} channels and the target images {t_shape[0]}: "
            "give --grayscale to convert both to one channel"
        )
    s_classes, t_classes = _classes(source), _classes(target)
    if len(s_classes) != len(t_classes) or s_classes != t_classes:
        raise ValueError(
            f"the source has {len(s_classes)} classes {sorted(s_classes)} and the target "
            f"{len(t_classes)} {sorted(t_classes)}: adaptation needs the same classes"
        )
    levels = max(source.levels, target.levels)
    source, target = (
        _map(source, lambda d: requantize(d, levels)),
        _map(target, lambda d: requantize(d, levels)),
    )
    source = Splits(subset(source.train, source_size, "--source-size"), source.val, source.test)
    target = Splits(subset(target.train, target_size, "--target-size"), target.val, target.test)
    return source, target
