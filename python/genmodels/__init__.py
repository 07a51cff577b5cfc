"""genmodels: fast kernels and models for deep generative modelling in PyTorch."""

from genmodels import gan, nn, ops
from genmodels._backend import backends

__version__ = "0.1.0"

__all__ = ["backends", "gan", "nn", "ops", "__version__"]
