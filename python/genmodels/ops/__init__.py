"""Autograd-aware operators with native, Triton and reference backends."""

from genmodels.ops.diagonal_lstm import diagonal_lstm
from genmodels.ops.dropout import dropout
from genmodels.ops.grad_reverse import grad_reverse
from genmodels.ops.gradient_penalty import gradient_penalty
from genmodels.ops.masked_conv2d import gate, make_mask, masked_conv2d, masked_conv2d_gated
from genmodels.ops.pixelcnn_residual_block import pixelcnn_residual_block
from genmodels.ops.reparameterize_kl import reparameterize_kl
from genmodels.ops.row_lstm import row_lstm

__all__ = [
    "diagonal_lstm",
    "dropout",
    "gate",
    "grad_reverse",
    "gradient_penalty",
    "make_mask",
    "masked_conv2d",
    "masked_conv2d_gated",
    "pixelcnn_residual_block",
    "reparameterize_kl",
    "row_lstm",
]
