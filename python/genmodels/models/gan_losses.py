"""GAN objectives on critic scores: (critic loss, generator loss) for each kind.

minimax (Goodfellow et al. 2014), non-saturating (the same paper's practical variant),
wgan-gp (Gulrajani et al. 2017; the penalty is added by the caller), dragan (Kodali et
al. 2017: the non-saturating game plus a penalty around the data), lsgan (Mao et al.
2017) and hinge (Lim and Ye 2017; Miyato et al. 2018).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LOSSES = ("minimax", "non-saturating", "wgan-gp", "dragan", "lsgan", "hinge")
PENALTY = {"wgan-gp": "wgan-gp", "dragan": "dragan"}


def critic_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    if kind in ("minimax", "non-saturating", "dragan"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()  # BCE with logits
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    if kind == "lsgan":
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def generator_loss(kind: str, fake: Tensor) -> Tensor:
    if kind == "minimax":
        return -F.softplus(fake).mean()  # minimizes log(1 - D(G(z)))
    if kind in ("non-saturating", "dragan"):
        return F.softplus(-fake).mean()  # maximizes log D(G(z))
    if kind in ("wgan-gp", "hinge"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * ((fake - 1) ** 2).mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
