"""Generative models built on genmodels.nn and genmodels.ops."""

from genmodels.models.pixelcnn import GatedPixelCNN, PixelCNN
from genmodels.models.vae import VAE

__all__ = ["VAE", "GatedPixelCNN", "PixelCNN"]
