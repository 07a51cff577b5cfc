"""DCGAN (Radford et al. 2016): a fractional-strided generator with ReLU and Tanh and a
strided critic with LeakyReLU, for 8x8, 28x28, 32x32 and 64x64 images, optionally
class-conditional (generator: a label embedding concatenated to z; critic: a projection
term, Miyato and Koyama 2018).

With `ema_decay` the model also keeps an exponential moving average of the generator's
weights (Yazici et al. 2019; Karras et al. 2018), `generator_ema`, updated by
`update_ema()` after each generator step; `sample` and `interpolate` then draw from it.
The average is part of the state dict, so checkpoints hold it and resume it exactly."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from genmodels.models._args import check_levels, check_positive
from genmodels.models._likelihood import to_unit

SIZES = {8: 4, 28: 7, 32: 4, 64: 4}  # image size -> size of the generator's first feature map
# Image size -> size of the critic's last feature map. The critic mirrors the generator,
# except at 8x8, where one strided layer (8 -> 4) makes too weak a critic: with a second
# one (4 -> 2) the digits GAN's Frechet distance and class balance roughly halve.
CRITIC_SIZES = {8: 2, 28: 7, 32: 4, 64: 4}


def _upsamplings(image_size: int, start: dict[int, int] = SIZES) -> int:
    if image_size not in start:
        raise ValueError(f"image_size must be one of {sorted(start)}, got {image_size!r}")
    steps, size = 0, start[image_size]
    while size < image_size:
        size *= 2
        steps += 1
    return steps


class Generator(nn.Module):
    def __init__(self, latent_dim, hidden_channels, out_channels, image_size, num_classes=None):
        super().__init__()
        steps = _upsamplings(image_size)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.start = SIZES[image_size]
        width = hidden_channels * 2**steps
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.project = nn.Sequential(
            nn.Linear(in_dim, width * self.start * self.start, bias=False),
            nn.Unflatten(1, (width, self.start, self.start)),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for _ in range(steps):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(),
            ]
            width //= 2
        self.body = nn.Sequential(*layers, nn.Conv2d(width, out_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images in [-1, 1] from latents [B, latent_dim] (and labels [B])."""
        if self.embed is not None:
            if y is None:
                raise ValueError("this generator is class-conditional: pass the labels y")
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.body(self.project(z))


class Discriminator(nn.Module):
    """Strided convolutions with LeakyReLU(0.2); batch norm after the first layer unless
    `batch_norm=False` (a WGAN-GP critic must not use it: the penalty is per sample)."""

    def __init__(self, in_channels, hidden_channels, image_size, num_classes=None, batch_norm=True):
        super().__init__()
        steps = _upsamplings(image_size, CRITIC_SIZES)
        width = hidden_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for _ in range(steps - 1):
            layers.append(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(2 * width))
            layers.append(nn.LeakyReLU(0.2))
            width *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        features = width * CRITIC_SIZES[image_size] ** 2
        self.score = nn.Linear(features, 1)
        self.project = nn.Embedding(num_classes, features) if num_classes else None

    def piecewise_linear_layers(self) -> list[nn.Module] | None:
        """The layers as one chain, for genmodels.gan's first-order penalty gradients; None
        when the projection (class conditioning) is on."""
        return None if self.project is not None else [*self.features, self.score]

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One score per image [B] for images in [-1, 1]."""
        h = self.features(x)
        out = self.score(h).squeeze(1)
        if self.project is not None:
            if y is None:
                raise ValueError("this critic is class-conditional: pass the labels y")
            out = out + (self.project(y) * h).sum(1)
        return out


class DCGAN(nn.Module):
    """`generator`, `discriminator`, `sample(n, truncation=None)` and `interpolate`;
    with `ema_decay`, also `generator_ema` and `update_ema()`."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        image_size: int = 8,
        levels: int = 17,
        latent_dim: int = 32,
        hidden_channels: int = 64,
        num_classes: int | None = None,
        batch_norm_critic: bool = False,
        ema_decay: float | None = None,
    ):
        super().__init__()
        check_positive(in_channels=in_channels, latent_dim=latent_dim,
                        hidden_channels=hidden_channels)  # fmt: skip
        if num_classes is not None:
            check_positive(num_classes=num_classes)
        check_levels(levels)
        if ema_decay is not None and (
            isinstance(ema_decay, bool)
            or not isinstance(ema_decay, (int, float))
            or not 0 <= ema_decay < 1
        ):
            raise ValueError(f"ema_decay must be None or a float in [0, 1), got {ema_decay!r}")
        self.in_channels, self.image_size, self.levels = in_channels, image_size, levels
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.generator = Generator(
            latent_dim, hidden_channels, in_channels, image_size, num_classes
        )
        self.discriminator = Discriminator(
            in_channels, hidden_channels, image_size, num_classes, batch_norm=batch_norm_critic
        )
        self.ema_decay = ema_decay
        self.generator_ema = None
        if ema_decay is not None:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @property
    def sampler(self) -> Generator:
        """The generator that `sample` and `interpolate` use: the average when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def update_ema(self) -> None:
        """generator_ema <- decay * generator_ema + (1 - decay) * generator, for the weights
        and the batch-norm running statistics alike (the averaged weights see averaged
        feature statistics); a no-op without `ema_decay`."""
        if self.generator_ema is None:
            return
        d, ema = self.ema_decay, self.generator_ema
        for avg, new in zip(ema.parameters(), self.generator.parameters(), strict=True):
            avg.lerp_(new, 1 - d)
        for avg, new in zip(ema.buffers(), self.generator.buffers(), strict=True):
            if avg.is_floating_point():
                avg.lerp_(new, 1 - d)
            else:
                avg.copy_(new)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.generator_ema is not None:
            self.generator_ema.eval()  # never updates its statistics from its own samples
        return self

    def to_unit(self, x: Tensor) -> Tensor:
        """Integer-level images to the [-1, 1] floats the critic sees."""
        return to_unit(x, self.levels, self.discriminator.score.weight.dtype)

    def to_levels(self, images: Tensor) -> Tensor:
        return torch.round((images.float().clamp(-1, 1) + 1) * (self.levels - 1) / 2).long()

    def latents(self, n: int, truncation: float | None = None, generator=None) -> Tensor:
        """z ~ N(0, I); with `truncation` (BigGAN's trick) every component whose magnitude
        exceeds it is redrawn until none does."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        if truncation is None:
            return z
        if not truncation > 0:
            raise ValueError(f"truncation must be positive, got {truncation!r}")
        outside = z.abs() > truncation
        while outside.any():
            redraw = torch.randn(z.shape, generator=generator, device=device)
            z = torch.where(outside, redraw, z)
            outside = z.abs() > truncation
        return z

    def _labels(self, n: int, y: Tensor | None) -> Tensor | None:
        if self.num_classes is None:
            return None
        device = next(self.parameters()).device
        return y if y is not None else torch.arange(n, device=device) % self.num_classes

    @torch.no_grad()
    def sample(self, n: int, truncation: float | None = None, y=None, generator=None) -> Tensor:
        """n integer-level images [n, C, H, W]."""
        z = self.latents(n, truncation, generator)
        return self.to_levels(self.sampler(z, self._labels(n, y)))

    @torch.no_grad()
    def interpolate(self, n: int, steps: int = 8, generator=None) -> Tensor:
        """Images along n spherical paths between pairs of latents: [steps, n, C, H, W]."""
        z0, z1 = self.latents(n, generator=generator), self.latents(n, generator=generator)
        cos = torch.nn.functional.cosine_similarity(z0, z1).clamp(-1 + 1e-6, 1 - 1e-6)
        omega = torch.acos(cos).unsqueeze(1)
        frames = []
        for t in torch.linspace(0, 1, steps).tolist():
            z = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
            frames.append(self.to_levels(self.sampler(z, self._labels(n, None))))
        return torch.stack(frames)
