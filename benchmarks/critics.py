"""Critics shared by the gradient-penalty benchmarks, measurements and tests."""

from __future__ import annotations

from torch import nn


class DCGANCritic(nn.Module):
    """The DCGAN discriminator without batch norm (as WGAN-GP prescribes): strided 4x4
    convolutions doubling the channels down to 4x4, then a 4x4 convolution to one score."""

    def __init__(self, image_size=32, in_channels=3, width=64, activation="leaky_relu"):
        super().__init__()
        layers, ch, size = [], in_channels, image_size
        out = width
        while size > 4:
            layers += [nn.Conv2d(ch, out, 4, 2, 1), _activation(activation)]
            ch, out, size = out, out * 2, size // 2
        layers.append(nn.Conv2d(ch, 1, 4))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten()

    def piecewise_linear_layers(self):
        # An ELU critic is refused by genmodels.gan itself (not piecewise linear).
        return list(self.net)


def _activation(name: str) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "relu":
        return nn.ReLU()
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {name!r}")
