"""The genmodels noise stream in Triton (spec: genmodels/ops/_philox.py)."""

import triton
import triton.language as tl

PHILOX_M0: tl.constexpr = tl.constexpr(0xD2511F53)
PHILOX_M1: tl.constexpr = tl.constexpr(0xCD9E8D57)
PHILOX_W0: tl.constexpr = tl.constexpr(0x9E3779B9)
PHILOX_W1: tl.constexpr = tl.constexpr(0xBB67AE85)
TWO_PI: tl.constexpr = tl.constexpr(6.283185307179586)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 tensors."""
    m0 = tl.full(c0.shape, PHILOX_M0, tl.uint32)
    m1 = tl.full(c0.shape, PHILOX_M1, tl.uint32)
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(m0, c0)
        lo0 = m0 * c0
        hi1 = tl.umulhi(m1, c2)
        lo1 = m1 * c2
        c0 = hi1 ^ c1 ^ k0
        c1 = lo1
        c2 = hi0 ^ c3 ^ k1
        c3 = lo0
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


def philox_key(seed: int, offset: int) -> tuple[int, int, int, int]:
    """(seed_lo, seed_hi, offset_lo, offset_hi): the kernels' scalar arguments for a stream."""
    mask = 0xFFFFFFFF
    return seed & mask, seed >> 32, offset & mask, offset >> 32


@triton.jit
def philox_group(g, seed_lo, seed_hi, offset_lo, offset_hi):
    """The four uint32 words of counter groups `g` (int64 tensor) for key (seed, offset)."""
    c0 = (g & 0xFFFFFFFF).to(tl.uint32)
    c1 = (g >> 32).to(tl.uint32)
    zero = tl.zeros(g.shape, tl.uint32)
    c2 = zero + offset_lo.to(tl.uint32)
    c3 = zero + offset_hi.to(tl.uint32)
    k0 = zero + seed_lo.to(tl.uint32)
    k1 = zero + seed_hi.to(tl.uint32)
    return philox4x32_10(c0, c1, c2, c3, k0, k1)


@triton.jit
def philox_normal(idx, seed_lo, seed_hi, offset_lo, offset_hi):
    """Float32 normal of stream element `idx` (int64 tensor) for key (seed, offset)."""
    lane = idx & 3
    x0, x1, x2, x3 = philox_group(idx >> 2, seed_lo, seed_hi, offset_lo, offset_hi)
    radius_bits = tl.where(lane < 2, x0, x2)
    angle_bits = tl.where(lane < 2, x1, x3)
    u = ((radius_bits >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07
    turns = (angle_bits >> 8).to(tl.float32) * 5.9604644775390625e-08
    radius = tl.sqrt(-2.0 * tl.log(u))
    angle = TWO_PI * turns
    return tl.where((lane & 1) == 0, radius * tl.cos(angle), radius * tl.sin(angle))
