"""genmodels: fast kernels and models for deep generative modelling in PyTorch."""

import importlib

from genmodels import gan, nn, ops
from genmodels._backend import backends

__version__ = "0.1.0"

# Imported on first use (`genmodels.models.PixelCNN` after `import genmodels`), as
# torchvision.models is: models, data and training pull in scikit-learn, PIL and tqdm,
# which `import genmodels` for the ops alone does not need.
_LAZY_SUBMODULES = ("data", "evaluation", "models", "recipes", "training")

__all__ = ["backends", "gan", "nn", "ops", "__version__", *_LAZY_SUBMODULES]


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"genmodels.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'genmodels' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
