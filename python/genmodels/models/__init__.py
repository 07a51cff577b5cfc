"""Generative models built on genmodels.nn and genmodels.ops."""

from genmodels.models import gan_losses
from genmodels.models.adapt import AdaptNet
from genmodels.models.dcgan import DCGAN
from genmodels.models.pixelcnn import GatedPixelCNN, PixelCNN
from genmodels.models.pixelrnn import PixelRNN
from genmodels.models.vae import VAE

__all__ = ["AdaptNet", "DCGAN", "VAE", "GatedPixelCNN", "PixelCNN", "PixelRNN", "gan_losses"]
