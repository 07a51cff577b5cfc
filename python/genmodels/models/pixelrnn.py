"""PixelRNN (van den Oord et al. 2016a): the Row LSTM and the Diagonal BiLSTM, on genmodels'
fused recurrences (genmodels.ops.row_lstm, diagonal_lstm) and masked convolutions.

A 7x7 mask-A input convolution to 2C features, `num_layers` residual LSTM layers of C
hidden channels, two 1x1 mask-B output layers and a softmax over the data's levels for
each sub-pixel, as in the PixelCNNs (the shared interface of pixelcnn._Autoregressive).

- Row LSTM layer: a 1 x k (k = 3) mask-B input-to-state convolution along the row (taps
  left of the pixel, and the pixel itself per colour group), the Row LSTM over the rows.
- Diagonal BiLSTM layer: a 1x1 mask-B input-to-state convolution, a left-to-right and a
  right-to-left Diagonal LSTM; the right-to-left output is shifted down one row before
  the two are added, so that no pixel to the right on the current row is seen.
- Each layer's h goes through a 1x1 mask-B convolution back to 2C and is added to its input.

RGB data: channel groups R, G, B of every feature map (contiguous blocks), and the gate
channels of the input-to-state convolutions laid out so that hidden channel ch's four
gates (channels ch, C + ch, 2C + ch, 3C + ch) all belong to ch's colour group.

`sample(method="cached")` is incremental: each new sub-pixel recomputes only its own
position through every layer, from cached states of the positions before it (and, for the
Diagonal BiLSTM, runs each finished row's right-to-left LSTM once), instead of re-running
the network on the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genmodels.models._args import check_probability
from genmodels.models._likelihood import to_unit
from genmodels.models.pixelcnn import _Autoregressive, _dropout
from genmodels.nn import DiagonalLSTM, MaskedConv2d, RowLSTM
from genmodels.ops import _lstm

KINDS = ("row", "diagonal")
SAMPLE_METHODS = ("cached", "naive")


def _gate_groups(hidden: int, groups: int, directions: int) -> Tensor:
    """Colour group of each gate channel in the ops' layout (direction, gate, hidden)."""
    hidden_of = torch.arange(directions * 4 * hidden) % hidden
    return hidden_of * groups // hidden


class _GateConv(nn.Conv2d):
    """The input-to-state convolution: a 1 x width kernel along the row (odd width) with
    mask B (taps left of the pixel on; the pixel's own tap from input groups up to the gate
    channel's group); output channels in the ops' gate layout, `directions` blocks of 4C."""

    def __init__(self, in_channels, hidden, width, groups, directions=1):
        out = directions * 4 * hidden
        super().__init__(in_channels, out, (1, width), padding=(0, width // 2))
        mask = torch.zeros(out, in_channels, 1, width)
        mask[:, :, 0, : width // 2] = 1
        in_groups = torch.arange(in_channels) * groups // in_channels
        centre = in_groups[None, :] <= _gate_groups(hidden, groups, directions)[:, None]
        mask[:, :, 0, width // 2] = centre.float()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight * self.mask.to(self.weight.dtype), self.bias, padding=self.padding
        )


class _Residual(nn.Module):
    """h -> dropout -> 1x1 mask-B convolution back to the layer's input width."""

    def __init__(self, hidden, features, groups, dropout, backend):
        super().__init__()
        self.dropout = _dropout(dropout, backend)
        self.conv = MaskedConv2d(hidden, features, 1, "B", color_groups=groups, backend=backend)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(self.dropout(h))


def _column(t: Tensor) -> Tensor:
    """[n, C] -> [n, C, 1, 1]: one position as an image for the 1x1 convolutions."""
    return t[:, :, None, None]


class _RowLayer(nn.Module):
    def __init__(self, features, hidden, groups, dropout, backend, kernel_size=3):
        super().__init__()
        self.input_to_state = _GateConv(features, hidden, kernel_size, groups)
        self.lstm = RowLSTM(hidden, kernel_size, backend=backend)
        self.residual = _Residual(hidden, features, groups, dropout, backend)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(self.lstm(self.input_to_state(x)))

    # --- incremental evaluation, one position at a time (sample(method="cached")) ------

    def start(self, n: int, width: int, like: Tensor) -> None:
        c, f = self.lstm.hidden_channels, self.input_to_state.in_channels
        self.inputs = like.new_zeros(n, f, width)  # this row's layer inputs
        self.h_above = like.new_zeros(n, c, width)
        self.c_above = like.new_zeros(n, c, width)
        self.h_row = like.new_zeros(n, c, width)
        self.c_row = like.new_zeros(n, c, width)
        self.first_row = True

    def position(self, x: Tensor, j: int) -> Tensor:
        """The layer's output at column j of the current row from its input x [n, F]."""
        self.inputs[:, :, j] = x
        k = self.lstm.weight.shape[2]
        p = k // 2
        # The input-to-state convolution on a window centred on j (taps right of j are
        # masked, so they may stay zero).
        window = F.pad(self.inputs, (p, p))[:, :, None, j : j + k]
        gates = self.input_to_state(window)[:, :, 0, p]
        if self.first_row:
            pre = gates if self.lstm.bias is None else gates + self.lstm.bias
            c_prev = None
        else:
            above = F.pad(self.h_above, (p, p))[:, :, j : j + k]
            pre = gates + F.conv1d(above, self.lstm.weight, self.lstm.bias)[:, :, 0]
            c_prev = self.c_above[:, :, j]
        h, c = _lstm.cell(pre, c_prev)
        self.h_row[:, :, j], self.c_row[:, :, j] = h, c
        return x + self.residual(_column(h))[:, :, 0, 0]

    def end_row(self) -> None:
        self.h_above, self.h_row = self.h_row, self.h_above
        self.c_above, self.c_row = self.c_row, self.c_above
        self.first_row = False


class _DiagonalLayer(nn.Module):
    def __init__(self, features, hidden, groups, dropout, backend):
        super().__init__()
        self.input_to_state = _GateConv(features, hidden, 1, groups, directions=2)
        self.left_to_right = DiagonalLSTM(hidden, backend=backend)
        self.right_to_left = DiagonalLSTM(hidden, reverse=True, backend=backend)
        self.residual = _Residual(hidden, features, groups, dropout, backend)

    def forward(self, x: Tensor) -> Tensor:
        forward_gates, reverse_gates = self.input_to_state(x).chunk(2, dim=1)
        h = self.left_to_right(forward_gates)
        reverse = self.right_to_left(reverse_gates)
        # Down one row: the right-to-left state at (r - 1, j) has seen row r - 1 only.
        h = h + F.pad(reverse, (0, 0, 1, 0))[:, :, :-1]
        return x + self.residual(h)

    # --- incremental evaluation -----------------------------------------------------------

    def start(self, n: int, width: int, like: Tensor) -> None:
        c = self.left_to_right.hidden_channels
        self.width = width
        self.reverse_gates = like.new_zeros(n, 4 * c, width)  # this row's, from its inputs
        self.h_above = like.new_zeros(n, c, width)
        self.h_row = like.new_zeros(n, c, width)
        self.c_row = like.new_zeros(n, c, width)
        self.reverse_above = like.new_zeros(n, c, width)  # right-to-left h of the row above
        self.first_row = True

    @staticmethod
    def _step(lstm, gates, above, left, c_left):
        taps = torch.stack([above, left], dim=2)
        pre = gates + F.conv1d(taps, lstm.weight, lstm.bias)[:, :, 0]
        return _lstm.cell(pre, c_left)

    def position(self, x: Tensor, j: int) -> Tensor:
        forward_gates, reverse_gates = self.input_to_state(_column(x))[:, :, 0, 0].chunk(2, 1)
        self.reverse_gates[:, :, j] = reverse_gates
        zero = torch.zeros_like(self.h_row[:, :, 0])
        left = self.h_row[:, :, j - 1] if j > 0 else zero
        c_left = self.c_row[:, :, j - 1] if j > 0 else None
        h, c = self._step(self.left_to_right, forward_gates, self.h_above[:, :, j], left, c_left)
        self.h_row[:, :, j], self.c_row[:, :, j] = h, c
        return x + self.residual(_column(h + self.reverse_above[:, :, j]))[:, :, 0, 0]

    def end_row(self) -> None:
        """Runs the finished row's right-to-left LSTM (read by the next row)."""
        reverse = torch.zeros_like(self.reverse_above)
        zero = torch.zeros_like(reverse[:, :, 0])
        c_right = None
        for j in range(self.width - 1, -1, -1):
            right = reverse[:, :, j + 1] if j + 1 < self.width else zero
            h, c_right = self._step(
                self.right_to_left, self.reverse_gates[:, :, j], self.reverse_above[:, :, j],
                right, c_right,
            )  # fmt: skip
            reverse[:, :, j] = h
        self.reverse_above = reverse
        self.h_above, self.h_row = self.h_row, self.h_above
        self.first_row = False


class PixelRNN(_Autoregressive):
    """Row LSTM (`kind="row"`) or Diagonal BiLSTM (`kind="diagonal"`) PixelRNN; `forward(x)`
    takes integer levels [B, C, H, W] and returns logits [B, levels, C, H, W].
    `hidden_channels` is each LSTM's state width C (the residual stream has 2C); `dropout`
    acts on each layer's h before its residual convolution."""

    def __init__(
        self,
        kind: str = "row",
        *,
        in_channels: int = 1,
        image_size: int = 8,
        levels: int = 17,
        hidden_channels: int = 32,
        num_layers: int = 4,
        num_classes: int | None = None,
        dropout: float = 0.2,
        backend: str = "auto",
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        super().__init__(in_channels, image_size, levels, hidden_channels, num_layers, num_classes)
        check_probability(dropout=dropout)
        self.kind = kind
        c, g = hidden_channels, self.color_groups
        f = 2 * c
        self.input = MaskedConv2d(in_channels, f, 7, "A", color_groups=g, backend=backend)
        layer = _RowLayer if kind == "row" else _DiagonalLayer
        self.layers = nn.ModuleList(layer(f, c, g, dropout, backend) for _ in range(num_layers))
        conv = dict(color_groups=g, backend=backend)
        self.output = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(f, f, 1, "B", **conv),
            nn.ReLU(),
            MaskedConv2d(f, in_channels * levels, 1, "B", **conv),
        )
        self.class_bias = nn.Embedding(num_classes, f) if num_classes else None

    def _net(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.input(to_unit(x, self.levels, self.input.weight.dtype))
        if self.class_bias is not None:
            h = h + self.class_bias(y)[:, :, None, None]
        for layer in self.layers:
            h = layer(h)
        return self.output(h)

    @torch.no_grad()
    def sample(
        self, n: int, y: Tensor | None = None, generator=None, method: str = "cached"
    ) -> Tensor:
        """n images [n, C, H, W] drawn sub-pixel by sub-pixel. "cached" updates the
        recurrent states position by position; "naive" re-runs the network for every
        sub-pixel. Both make the same draws from the same generator."""
        if method not in SAMPLE_METHODS:
            raise ValueError(f"method must be one of {SAMPLE_METHODS}, got {method!r}")
        if method == "naive":
            return super().sample(n, y, generator)
        device = next(self.parameters()).device
        dtype = self.input.weight.dtype
        if self.num_classes is not None and y is None:
            y = torch.arange(n, device=device) % self.num_classes
        size, k = self.image_size, self.input.weight.shape[-1]
        p = k // 2
        x = torch.zeros(n, self.in_channels, size, size, dtype=torch.long, device=device)
        like = torch.zeros((), dtype=dtype, device=device)
        for layer in self.layers:
            layer.start(n, size, like)
        class_bias = None if self.class_bias is None else self.class_bias(y)
        for i in range(size):
            for j in range(size):
                for ch in range(self.in_channels):
                    # The 7x7 input convolution on the window centred on (i, j) of the
                    # zero-padded image (taps on unsampled sub-pixels are masked).
                    unit = F.pad(to_unit(x, self.levels, dtype), (p, p, p, p))
                    h = self.input(unit[:, :, i : i + k, j : j + k])[:, :, p, p]
                    if class_bias is not None:
                        h = h + class_bias
                    for layer in self.layers:
                        h = layer.position(h, j)
                    logits = self._logits(self.output(_column(h)))[:, :, ch, 0, 0]
                    probs = logits.float().softmax(dim=1)
                    x[:, ch, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            for layer in self.layers:
                layer.end_row()
        return x
