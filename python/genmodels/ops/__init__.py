"""Autograd-aware operators with native, Triton and reference backends."""

from genmodels.ops.masked_conv2d import make_mask, masked_conv2d, masked_conv2d_gated
from genmodels.ops.reparameterize_kl import reparameterize_kl

__all__ = ["make_mask", "masked_conv2d", "masked_conv2d_gated", "reparameterize_kl"]
