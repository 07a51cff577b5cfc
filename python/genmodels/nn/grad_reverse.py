"""The gradient-reversal layer on genmodels.ops.grad_reverse."""

from __future__ import annotations

from torch import Tensor, nn

from genmodels import _backend
from genmodels.ops import _checks
from genmodels.ops.grad_reverse import grad_reverse


class GradientReversal(nn.Module):
    """Identity forward, ``-lambda_ * grad`` backward (Ganin and Lempitsky 2015).

    ``lambda_`` is a plain attribute (no parameter, empty ``state_dict``), so a training loop
    can follow a schedule by assigning it, e.g. Ganin's ``2 / (1 + exp(-10 p)) - 1``.
    """

    def __init__(self, lambda_: float = 1.0, backend: str = "auto"):
        super().__init__()
        self.lambda_ = _checks.check_real(lambda_, "lambda_")
        self.backend = _backend._check_name(backend, "backend")

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambda_, backend=self.backend)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
