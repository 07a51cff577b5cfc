"""Drop-in nn.Module layers built on genmodels.ops."""

from genmodels.nn.gradient_penalty import GradientPenalty
from genmodels.nn.reparameterize_kl import ReparameterizeKL

__all__ = ["GradientPenalty", "ReparameterizeKL"]
