"""Training, checkpoints and evaluation behind `genmodels train|sample|evaluate`."""

from genmodels.training.checkpoint import load_checkpoint, save_checkpoint
from genmodels.training.loop import TrainConfig, train

__all__ = ["TrainConfig", "load_checkpoint", "save_checkpoint", "train"]
