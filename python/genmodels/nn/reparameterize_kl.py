from __future__ import annotations

import torch
from torch import Tensor, nn

from genmodels.ops import _checks
from genmodels.ops.reparameterize_kl import reparameterize_kl


class ReparameterizeKL(nn.Module):
    """The sampling layer of a VAE: `(z, kl) = layer(mu, logvar)`.

    In training mode it samples z = mu + eps * sigma; in eval mode it returns z = mu
    unless `sample_in_eval=True`. `num_samples` draws several z per input (IWAE).
    """

    def __init__(
        self,
        num_samples: int | None = None,
        reduction: str = "none",
        sample_in_eval: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        if num_samples is not None:
            _checks.check_positive_int(num_samples, "num_samples")
        self.num_samples = num_samples
        self.reduction = _checks.check_reduction(reduction)
        self.sample_in_eval = sample_in_eval
        self.backend = backend

    def forward(
        self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        eps = None
        if not (self.training or self.sample_in_eval):
            shape = mu.shape if self.num_samples is None else (self.num_samples, *mu.shape)
            eps = mu.new_zeros(shape)
        return reparameterize_kl(
            mu,
            logvar,
            eps=eps,
            num_samples=self.num_samples,
            generator=generator,
            reduction=self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, reduction={self.reduction!r}"
