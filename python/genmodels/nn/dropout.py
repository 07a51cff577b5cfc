"""Dropout as a drop-in torch.nn.Dropout on genmodels.ops.dropout."""

from __future__ import annotations

from torch import Tensor, nn

from genmodels import _backend
from genmodels.ops.dropout import dropout


class Dropout(nn.Dropout):
    """`torch.nn.Dropout` (same `p`, `repr`, empty `state_dict`, train/eval behaviour) whose
    mask is drawn inside the kernel and regenerated in backward instead of stored.

    `inplace=True` is refused: the output is always a new tensor, and since nothing of the
    input's size is saved for backward, an in-place form would save no memory.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, backend: str = "auto"):
        super().__init__(p, inplace)
        if inplace:
            raise ValueError(
                "genmodels.nn.Dropout has no in-place form (inplace=True); use inplace=False"
            )
        self.backend = _backend._check_name(backend, "backend")

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, training=self.training, backend=self.backend)
