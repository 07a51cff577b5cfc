"""Drop-in nn.Module layers built on genmodels.ops."""

from genmodels.nn.reparameterize_kl import ReparameterizeKL

__all__ = ["ReparameterizeKL"]
