"""Autograd-aware operators with native, Triton and reference backends."""

from genmodels.ops.gradient_penalty import gradient_penalty
from genmodels.ops.reparameterize_kl import reparameterize_kl

__all__ = ["gradient_penalty", "reparameterize_kl"]
