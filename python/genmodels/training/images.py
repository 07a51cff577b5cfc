"""Image grids written as PNG."""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from genmodels.training.rundir import atomic_write


def grid(images: torch.Tensor, levels: int, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 [H', W'] or [H', W', 3] mosaic of integer-level images [N, C, H, W]."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    scaled = (images.float() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
    canvas = torch.zeros(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top : top + h, left : left + w] = scaled[i]
    array = canvas.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def save_grid(images: torch.Tensor, levels: int, path: str, scale: int = 4, nrow=None) -> None:
    """Writes a PNG of the images, each pixel `scale` times larger (8x8 digits are tiny)."""
    from PIL import Image

    picture = Image.fromarray(grid(images.cpu(), levels, nrow=nrow))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write(path, buffer.getbuffer())
