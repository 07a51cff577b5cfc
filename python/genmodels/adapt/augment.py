"""Random translations of the labelled source images while the source model is trained.

A printed-digit source learns features tied to where its renderer puts the glyph; the
handwritten target is placed by other hands. Shifting each source image by up to
`max_shift` pixels (zero fill, drawn from the epoch's generator, so runs stay
reproducible and resumable) makes the pretrained encoder less position-bound, which
every method then starts from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def default_shift(image_size: int) -> int:
    """One pixel per 8 of the image side: one 4x4 block of the 8x8 digits, 3 px at 28x28."""
    return max(1, image_size // 8)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image [N, C, H, W] translated by its own (dy, dx), both in [-max_shift,
    max_shift], the uncovered border filled with zeros (the background level)."""
    if max_shift == 0 or images.shape[0] == 0:
        return images
    n, _, h, w = images.shape
    s = max_shift
    padded = F.pad(images, (s, s, s, s))
    offsets = torch.randint(0, 2 * s + 1, (2, n), generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h))[:, None, :, None]  # [N, 1, H, 1]
    cols = (offsets[1, :, None] + torch.arange(w))[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n)[:, None, None, None]
    channels = torch.arange(images.shape[1])[None, :, None, None]
    return padded[batch, channels, rows, cols]
