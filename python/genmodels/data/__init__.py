"""Data sets as integer gray/colour levels: embedded digits, MNIST, CIFAR-10, image folders.

`load(spec)` takes "digits" (the default everywhere, shipped inside scikit-learn),
"mnist:DIR", "cifar10:DIR" or "folder:DIR". Nothing is ever downloaded: a missing,
truncated or corrupt file raises an error that names the path and what was expected.
"""

from genmodels.data.datasets import ImageDataset, Splits, load
from genmodels.data.loaders import load_cifar10, load_digits, load_folder, load_mnist

__all__ = [
    "ImageDataset",
    "Splits",
    "load",
    "load_cifar10",
    "load_digits",
    "load_folder",
    "load_mnist",
]
