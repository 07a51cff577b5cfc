from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

SPLIT_SEED = 0


@dataclasses.dataclass
class ImageDataset(Dataset):
    """Images as integer levels in [0, levels), uint8 [N, C, H, W], with int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    levels: int
    name: str

    def __post_init__(self):
        if self.images.dim() != 4:
            raise ValueError(
                f"{self.name}: images must be [N, C, H, W], got {list(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: one label per image expected")
        if self.images.numel() and int(self.images.max()) >= self.levels:
            raise ValueError(f"{self.name}: image values must be below levels={self.levels}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, index: torch.Tensor, name: str) -> ImageDataset:
        return ImageDataset(self.images[index], self.labels[index], self.levels, name)


@dataclasses.dataclass
class Splits:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset

    @property
    def levels(self) -> int:
        return self.train.levels


def split(data: ImageDataset, sizes: tuple[int, int, int], seed: int = SPLIT_SEED) -> Splits:
    """A fixed random split of `data` into train/val/test of the given sizes."""
    if sum(sizes) > len(data):
        raise ValueError(f"{data.name}: split sizes {sizes} exceed the {len(data)} images")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    a, b, c = sizes
    parts = (order[:a], order[a : a + b], order[a + b : a + b + c])
    names = ("train", "val", "test")
    return Splits(*(data.subset(p, f"{data.name}/{n}") for p, n in zip(parts, names, strict=True)))


def load(spec: str = "digits", *, binarize: bool = False) -> Splits:
    """The train/validation/test splits named by `spec` (see the module docstring)."""
    from genmodels.data import loaders

    if not isinstance(spec, str):
        raise TypeError(f"data must be a string such as 'digits' or 'mnist:DIR', got {spec!r}")
    kind, _, path = spec.partition(":")
    readers = {
        "mnist": lambda p: loaders.load_mnist(p, binarize=binarize),
        "cifar10": loaders.load_cifar10,
        "folder": loaders.load_folder,
    }
    known = (
        (kind == "digits" and not path)
        or kind == "synth-digits"
        or (kind in ("usps", "svhn", *readers) and path)
    )
    if not known:
        raise ValueError(
            f"data must be 'digits', 'synth-digits', 'mnist:DIR', 'usps:PATH', 'svhn:DIR', "
            f"'cifar10:DIR' or 'folder:DIR', got {spec!r}"
        )
    if binarize and kind != "mnist":
        # Binarizing means MNIST's 256 gray levels thresholded at 128 (see load_mnist).
        raise ValueError(f"binarize (--binarize) applies to mnist:DIR only, not {spec!r}")
    if kind == "digits":
        return loaders.load_digits()
    if kind == "synth-digits":
        from genmodels.data import synth_digits

        return synth_digits.load_synth_digits(**synth_digits.parse_options(path))
    if kind in ("usps", "svhn"):
        from genmodels.data import svhn, usps

        return {"usps": usps.load_usps, "svhn": svhn.load_svhn}[kind](path)
    return readers[kind](path)
