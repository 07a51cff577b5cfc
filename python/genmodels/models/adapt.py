"""Networks for unsupervised domain adaptation (genmodels.adapt): encoders, the label
classifier, and the domain classifier / adversarial discriminator on the features.

Images enter as integer levels [B, C, H, W] in [0, levels), like every genmodels model, and
each encoder maps them to [-1, 1] itself.

- `LeNetEncoder`: the LeNet of ADDA (Tzeng et al. 2017) for 28x28 and 32x32 inputs:
  conv 5x5 20, max-pool 2, ReLU, conv 5x5 50, dropout2d 0.5, max-pool 2, ReLU, linear to
  500 features (no activation: the classifier applies ReLU and dropout first, as in
  the paper's code).
- `SmallEncoder`: for 8x8 inputs (the embedded digits), where LeNet's two 5x5 valid
  convolutions do not fit: three 3x3 convolutions (64, 128, 256 channels, batch norm free
  so that source and target batches never share statistics) with two max-pools, then a
  linear layer to `feature_dim` features.
- `LabelClassifier`: ReLU, dropout 0.5, linear to the classes.
- `DomainDiscriminator`: the ADDA adversary, an MLP ``feature_dim -> 500 -> 500 -> 1``
  with ReLU: a piecewise-linear chain (nn.Sequential of Linear and ReLU), so
  `genmodels.gan.gradient_penalty(method="auto")` takes its exact first-order path. Also
  the domain classifier of gradient reversal and domain confusion (one logit: source).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ENCODERS = ("lenet", "small")


def default_encoder(image_size: int) -> str:
    """LeNet for 28x28 and larger inputs (the paper's digits), the small encoder below."""
    return "lenet" if image_size >= 28 else "small"


class _Encoder(nn.Module):
    def __init__(self, in_channels: int, image_size: int, levels: int, feature_dim: int):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size),
                            ("levels", levels), ("feature_dim", feature_dim)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.in_channels, self.image_size = in_channels, image_size
        self.levels, self.feature_dim = levels, feature_dim

    def scaled(self, x: Tensor) -> Tensor:
        """Integer levels -> floats in [-1, 1] (float inputs are taken as already scaled)."""
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, self.image_size, self.image_size):
            raise RuntimeError(
                f"x must be [B, {self.in_channels}, {self.image_size}, {self.image_size}], "
                f"got {list(x.shape)}"
            )
        if x.is_floating_point():
            return x
        return x.float() * (2.0 / (self.levels - 1)) - 1.0


class LeNetEncoder(_Encoder):
    def __init__(self, in_channels: int = 1, image_size: int = 28, levels: int = 256,
                 feature_dim: int = 500):  # fmt: skip
        super().__init__(in_channels, image_size, levels, feature_dim)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"the LeNet encoder needs images of at least 16x16, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(20, 50, 5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(), nn.Linear(50 * side * side, feature_dim),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.scaled(x))


class SmallEncoder(_Encoder):
    def __init__(self, in_channels: int = 1, image_size: int = 8, levels: int = 17,
                 feature_dim: int = 128, width: int = 32):  # fmt: skip
        super().__init__(in_channels, image_size, levels, feature_dim)
        if image_size % 4:
            raise ValueError(f"the small encoder needs a multiple of 4, got {image_size}")
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4 * width * side * side, feature_dim),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.features(self.scaled(x))


def build_encoder(kind: str, in_channels: int, image_size: int, levels: int) -> nn.Module:
    if kind == "lenet":
        return LeNetEncoder(in_channels, image_size, levels)
    if kind == "small":
        return SmallEncoder(in_channels, image_size, levels)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}")


class LabelClassifier(nn.Sequential):
    def __init__(self, feature_dim: int = 500, num_classes: int = 10, dropout: float = 0.5):
        super().__init__(nn.ReLU(), nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))


class DomainDiscriminator(nn.Sequential):
    """``feature_dim -> 500 -> 500 -> 1`` with ReLU: logits [B, 1], high for "source".

    Only Linear and ReLU layers, so `genmodels.gan.gradient_penalty(method="auto")`
    recognises it as a piecewise-linear chain."""

    def __init__(self, feature_dim: int = 500, hidden: int = 500):
        super().__init__(
            nn.Linear(feature_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )  # fmt: skip


class AdaptNet(nn.Module):
    """Everything one adaptation run trains, in one module (one state_dict, one checkpoint):
    the source encoder and label classifier, the domain classifier, and for ADDA the
    target encoder (initialised from the source encoder when adaptation starts)."""

    def __init__(self, in_channels: int = 1, image_size: int = 8, levels: int = 17,
                 num_classes: int = 10, encoder: str | None = None,
                 separate_target: bool = False):  # fmt: skip
        super().__init__()
        encoder = encoder or default_encoder(image_size)
        self.encoder_kind = encoder
        self.encoder = build_encoder(encoder, in_channels, image_size, levels)
        dim = self.encoder.feature_dim
        self.classifier = LabelClassifier(dim, num_classes)
        self.domain = DomainDiscriminator(dim)
        self.target_encoder = (
            build_encoder(encoder, in_channels, image_size, levels) if separate_target else None
        )

    def target_features(self, x: Tensor) -> Tensor:
        net = self.target_encoder if self.target_encoder is not None else self.encoder
        return net(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of source images."""
        return self.classifier(self.encoder(x))

    def classify_target(self, x: Tensor) -> Tensor:
        """Class logits of target images (through the target encoder where there is one)."""
        return self.classifier(self.target_features(x))

    @torch.no_grad()
    def init_target_from_source(self) -> None:
        if self.target_encoder is not None:
            self.target_encoder.load_state_dict(self.encoder.state_dict())
