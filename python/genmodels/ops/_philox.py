"""The genmodels noise stream in pure PyTorch: the spec every kernel reproduces.

Element i of a noise tensor (row-major over all samples) or of a dropout mask (x's memory
order) belongs to counter group g = i // 4: the four words of Philox4x32-10 with key
(seed_lo, seed_hi) and counter (g_lo, g_hi, offset_lo, offset_hi) (Salmon et al.,
"Parallel random numbers: as easy as 1, 2, 3", SC'11).

Normals: lanes 0 and 1 are the cosine and sine of a Box-Muller transform of words 0 and 1,
lanes 2 and 3 of words 2 and 3. The radius uniform is ((w >> 9) + 0.5) / 2^23, in (0, 1),
and the angle is (w >> 8) / 2^24 turns.

Dropout: element i is dropped iff (word i % 4) >> 8 < round(p * 2^24), an integer test
with the threshold computed once on the host (round half to even).

The same definition is in csrc/common/philox.h and genkernels/_philox.py.
"""

from __future__ import annotations

import math

import torch

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1


def draw_seed(generator: torch.Generator | None) -> torch.Tensor:
    """(seed, offset) as a CPU int64 tensor, drawn from `generator` or the default CPU one.

    Drawing from the CPU generator by default makes `torch.manual_seed` reproduce the
    noise on every device and backend, without a device synchronization.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    state = torch.randint(
        -(2**63), 2**63 - 1, (2,), dtype=torch.int64, generator=generator, device=device
    )
    return state.cpu()


def seed_words(seed: torch.Tensor) -> tuple[int, int]:
    s, o = seed.tolist()
    return s & MASK64, o & MASK64


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # a * b in 64 bits for a < 2^32 and b in [0, 2^32), without overflowing int64.
    low = a * (b & 0xFFFF)
    t = a * (b >> 16) + (low >> 16)
    return t >> 16, ((t & 0xFFFF) << 16) | (low & 0xFFFF)


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding uint32 words."""
    for _ in range(10):
        hi0, lo0 = _mulhilo(M0, c0)
        hi1, lo1 = _mulhilo(M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


def philox_groups(seed: int, offset: int, g: torch.Tensor):
    """The four words of counter groups `g` (a non-negative int64 tensor) of the stream
    keyed by (seed, offset)."""
    seed, offset = seed & MASK64, offset & MASK64
    c2 = torch.full_like(g, offset & MASK32)
    c3 = torch.full_like(g, offset >> 32)
    return philox4x32_10(g & MASK32, g >> 32, c2, c3, seed & MASK32, seed >> 32)


def philox_normals(seed: int, offset: int, count: int, device="cpu") -> torch.Tensor:
    """The first `count` normals (float32) of the stream keyed by (seed, offset)."""
    idx = torch.arange(count, dtype=torch.int64, device=device)
    lane = idx & 3
    x0, x1, x2, x3 = philox_groups(seed, offset, idx >> 2)
    radius_bits = torch.where(lane < 2, x0, x2)
    angle_bits = torch.where(lane < 2, x1, x3)
    u = ((radius_bits >> 9).double() + 0.5) * 2.0**-23
    turns = (angle_bits >> 8).double() * 2.0**-24
    radius = torch.sqrt(-2.0 * torch.log(u))
    angle = 2.0 * math.pi * turns
    values = torch.where(lane % 2 == 0, radius * torch.cos(angle), radius * torch.sin(angle))
    return values.float()


def dropout_threshold(p: float) -> int:
    """round(p * 2^24) for p in [0, 1]: element i is dropped iff its word >> 8 is below it,
    so P(drop) = p to within 2^-25. p * 2^24 is exact in float64, and Python rounds half
    to even, as the C++ side's nearbyint does."""
    return round(p * 2**24)


def dropout_dropped(seed: int, offset: int, idx: torch.Tensor, threshold: int) -> torch.Tensor:
    """Whether the stream elements `idx` (a non-negative int64 tensor of any shape) are
    dropped: word idx % 4 of counter group idx // 4, shifted right by 8, below `threshold`."""
    words = torch.stack(philox_groups(seed, offset, idx >> 2))
    word = words.gather(0, (idx & 3).unsqueeze(0)).squeeze(0)
    return (word >> 8) < threshold
