"""Drop-in nn.Module layers built on genmodels.ops."""

from genmodels.nn.dropout import Dropout
from genmodels.nn.grad_reverse import GradientReversal
from genmodels.nn.gradient_penalty import GradientPenalty
from genmodels.nn.masked_conv2d import GatedPixelCNNLayer, MaskedConv2d
from genmodels.nn.pixel_lstm import DiagonalLSTM, RowLSTM
from genmodels.nn.pixelcnn_residual_block import PixelCNNResidualBlock
from genmodels.nn.reparameterize_kl import ReparameterizeKL

__all__ = [
    "DiagonalLSTM",
    "Dropout",
    "GatedPixelCNNLayer",
    "GradientPenalty",
    "GradientReversal",
    "MaskedConv2d",
    "PixelCNNResidualBlock",
    "ReparameterizeKL",
    "RowLSTM",
]
