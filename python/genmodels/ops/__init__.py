"""Autograd-aware operators with native, Triton and reference backends."""

from genmodels.ops.reparameterize_kl import reparameterize_kl

__all__ = ["reparameterize_kl"]
