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

from genmodels.models import _sampling
from genmodels.models._args import check_probability
from genmodels.models._likelihood import to_unit
from genmodels.models.pixelcnn import _Autoregressive, _dropout
from genmodels.nn import DiagonalLSTM, MaskedConv2d, RowLSTM
from genmodels.ops.masked_conv2d import make_mask

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


class _RowLayer(nn.Module):
    def __init__(self, features, hidden, groups, dropout, backend, kernel_size=3):
        super().__init__()
        self.input_to_state = _GateConv(features, hidden, kernel_size, groups)
        self.lstm = RowLSTM(hidden, kernel_size, backend=backend)
        self.residual = _Residual(hidden, features, groups, dropout, backend)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(self.lstm(self.input_to_state(x)))


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


# --- sample(method="cached"): the network one position at a time ------------------------
#
# A position costs a few dozen small ops, so per-op overhead is what counts: the samplers
# multiply by the masked weights (built once per sample() call) with plain matrix products
# instead of calling the masked-conv and LSTM modules, keep every state in preallocated
# buffers laid out [n, column, channel] (a position's state is a view, the left taps of a
# row window one matrix), and do once per row what does not depend on the row's draws.


def _masked_weight(conv: MaskedConv2d) -> Tensor:
    w = conv.weight
    mask = make_mask(*w.shape[:3], conv.mask_type, conv.color_groups, dtype=w.dtype,
                     device=w.device)  # fmt: skip
    return w * mask


def _gate_weight(conv: _GateConv) -> Tensor:
    return conv.weight * conv.mask.to(conv.weight.dtype)


def _pointwise(conv: MaskedConv2d) -> tuple[Tensor, Tensor]:
    """A 1x1 masked convolution as (weight [C_in, C_out], bias) for torch.addmm."""
    w = _masked_weight(conv)[:, :, 0, 0]
    bias = conv.bias if conv.bias is not None else w.new_zeros(w.shape[0])
    return w.t(), bias


def _cell_into(pre: Tensor, c_prev: Tensor, h: Tensor, c: Tensor) -> None:
    """_lstm.cell(pre, c_prev) written into the state views h and c. A zero c_prev (no
    previous state) gives the same c, bit for bit, as c_prev=None."""
    i, f, _, o = pre.sigmoid().chunk(4, dim=1)
    torch.mul(i, pre.chunk(4, dim=1)[2].tanh(), out=c)
    c.addcmul_(f, c_prev)
    torch.mul(o, c.tanh(), out=h)


class _ResidualStep:
    """x + _Residual(h) at one position."""

    def __init__(self, residual: _Residual):
        self.weight, self.bias = _pointwise(residual.conv)
        # Identity in eval mode; in training mode it still draws, as in forward.
        self.dropout = residual.dropout if residual.dropout.training else None

    def __call__(self, x: Tensor, h: Tensor) -> Tensor:
        if self.dropout is not None:
            h = self.dropout(h)
        return torch.addmm(self.bias, h, self.weight).add_(x)


class _RowSampler:
    """A _RowLayer row by row, position by position."""

    def __init__(self, layer: _RowLayer, n: int, width: int):
        conv, self.lstm = layer.input_to_state, layer.lstm
        c, f = self.lstm.hidden_channels, conv.in_channels
        self.p = p = conv.weight.shape[-1] // 2
        # Taps right of the position are masked: the window is the p columns to its left
        # and itself, flattened (column, feature) as the inputs buffer holds them.
        w = _gate_weight(conv)[:, :, 0, : p + 1]
        self.gate_weight = w.permute(2, 1, 0).reshape((p + 1) * f, 4 * c)
        self.gate_bias = conv.bias
        self.residual = _ResidualStep(layer.residual)
        new = conv.weight.new_zeros
        self.inputs = new(n, p + width, f)  # this row's layer inputs after p zero columns
        self.h_above, self.c_above = new(n, width, c), new(n, width, c)
        self.h_row, self.c_row = new(n, width, c), new(n, width, c)
        self._start_row()

    def _start_row(self) -> None:
        # The state-to-state convolution reads the row above only: the whole row at once.
        # Zero states above the first row give the bias alone, as the op does.
        k = self.lstm.weight.shape[2]
        above = F.conv1d(self.h_above.transpose(1, 2), self.lstm.weight, self.lstm.bias,
                         padding=k // 2).transpose(1, 2)  # fmt: skip
        self.above = above if self.gate_bias is None else above + self.gate_bias

    def position(self, x: Tensor, j: int) -> Tensor:
        """The layer's output at column j of the current row from its input x [n, F]."""
        self.inputs[:, j + self.p] = x
        window = self.inputs[:, j : j + self.p + 1].flatten(1)  # a view
        pre = torch.addmm(self.above[:, j], window, self.gate_weight)
        h = self.h_row[:, j]
        _cell_into(pre, self.c_above[:, j], h, self.c_row[:, j])
        return self.residual(x, h)

    def end_row(self) -> None:
        self.h_above, self.h_row = self.h_row, self.h_above
        self.c_above, self.c_row = self.c_row, self.c_above
        self._start_row()


class _DiagonalSampler:
    """A _DiagonalLayer row by row: the left-to-right LSTM position by position, the
    right-to-left one for each finished row (read by the next row)."""

    def __init__(self, layer: _DiagonalLayer, n: int, width: int):
        conv, forward = layer.input_to_state, layer.left_to_right
        self.reverse = layer.right_to_left
        c, f = forward.hidden_channels, conv.in_channels
        w = _gate_weight(conv)[:, :, 0, 0]
        self.forward_weight, self.reverse_weight = w[: 4 * c].t(), w[4 * c :].t()
        bias = conv.bias if conv.bias is not None else w.new_zeros(8 * c)
        self.forward_bias, self.reverse_bias = bias[: 4 * c], bias[4 * c :]
        if forward.bias is not None:
            self.forward_bias = self.forward_bias + forward.bias
        # State-to-state taps: above, left. The right-to-left op applies its own left tap.
        above, left = forward.weight.unbind(2)
        self.forward_above, self.forward_left = above.t(), left.t()
        self.reverse_above_weight = self.reverse.weight[:, :, 0].t()
        self.residual = _ResidualStep(layer.residual)
        new = conv.weight.new_zeros
        self.inputs = new(n, width, f)  # this row's layer inputs
        # Column j's state at j + 1; column 0 stays zero: no state left of the first column.
        self.h_row, self.c_row, self.h_above = (new(n, width + 1, c) for _ in range(3))
        self.reverse_above = new(n, width, c)  # right-to-left h of the row above
        self._start_row()

    def _start_row(self) -> None:
        # The state above is known for the whole row (zero above the first row).
        self.above = self.h_above[:, 1:] @ self.forward_above + self.forward_bias

    def position(self, x: Tensor, j: int) -> Tensor:
        self.inputs[:, j] = x
        pre = torch.addmm(self.above[:, j], x, self.forward_weight)
        pre.addmm_(self.h_row[:, j], self.forward_left)
        h = self.h_row[:, j + 1]
        _cell_into(pre, self.c_row[:, j], h, self.c_row[:, j + 1])
        return self.residual(x, h + self.reverse_above[:, j])

    def end_row(self) -> None:
        # The finished row's right-to-left LSTM in one call of the op, on the row as a
        # one-row image: there it has no row above, so the term of the state above (the
        # right-to-left h of the row above) goes into the gates here.
        gates = self.inputs @ self.reverse_weight + self.reverse_bias
        gates = gates + self.reverse_above @ self.reverse_above_weight
        h = self.reverse(gates.transpose(1, 2)[:, :, None])  # [n, C, 1, width]
        self.reverse_above = h[:, :, 0].transpose(1, 2)  # read by the next row, shifted down
        self.h_above, self.h_row = self.h_row, self.h_above
        self._start_row()


def _cached_reason(model) -> str | None:
    """Why the cached sampler, which reads the weights and reimplements forward for the
    modules the constructor makes, cannot stand in for forward here; or None."""
    if type(model) is not PixelRNN:
        return f"{type(model).__name__} is not PixelRNN itself"
    reason = _sampling.hook_or_parametrization_reason(model)
    if reason is not None:
        return reason
    if model.kind == "row":
        layer_parts = {"": _RowLayer, "input_to_state": _GateConv, "lstm": RowLSTM}
    else:
        layer_parts = {"": _DiagonalLayer, "input_to_state": _GateConv,
                       "left_to_right": DiagonalLSTM, "right_to_left": DiagonalLSTM}  # fmt: skip
    layer_parts.update({"residual": _Residual, "residual.conv": MaskedConv2d})
    head = (nn.ReLU, MaskedConv2d, nn.ReLU, MaskedConv2d)
    if type(model.output) is not nn.Sequential or len(model.output) != len(head):
        return "module output is not the Sequential the constructor makes"
    expected = {"input": MaskedConv2d, **{f"output.{i}": k for i, k in enumerate(head)}}
    for i in range(len(model.layers)):
        expected.update({f"layers.{i}.{k}".rstrip("."): v for k, v in layer_parts.items()})
    modules = dict(model.named_modules())
    for name, kind in expected.items():
        if type(modules.get(name)) is not kind:
            return f"module {name} is not the {kind.__name__} the constructor makes"
    return None


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
        reason = None if method == "naive" else _cached_reason(self)
        if reason is not None:
            _sampling.fallback_warning(reason)
        if method == "naive" or reason is not None:
            return super().sample(n, y, generator, method="naive")
        device = next(self.parameters()).device
        if self.num_classes is not None and y is None:
            y = torch.arange(n, device=device) % self.num_classes
        return self._sample_cached(n, y, generator)

    def _sample_cached(self, n: int, y: Tensor | None, generator) -> Tensor:
        size, channels, levels = self.image_size, self.in_channels, self.levels
        w = _masked_weight(self.input)
        k = w.shape[-1]
        p = k // 2
        # The input convolution at (i, j) as one product with the window of the zero-padded
        # image: rows below the centre are all masked, so the window stops at row i.
        # Undrawn sub-pixels of the buffer stay zero; masked taps read them all.
        unit = w.new_zeros(n, channels, size + 2 * p, size + 2 * p)
        # to_unit of every level, looked up for each draw (the values forward computes).
        unit_levels = to_unit(torch.arange(levels, device=w.device), levels, w.dtype)
        input_weight = w[:, :, : p + 1].reshape(w.shape[0], -1).t()
        input_bias = self.input.bias if self.input.bias is not None else w.new_zeros(w.shape[0])
        if self.class_bias is not None:
            input_bias = input_bias + self.class_bias(y)
        sampler = _RowSampler if self.kind == "row" else _DiagonalSampler
        layers = [sampler(layer, n, size) for layer in self.layers]
        hidden, hidden_bias = _pointwise(self.output[1])
        # Only the drawn channel's block of the last layer's outputs: [C, F, levels].
        out_weight, out_bias = _pointwise(self.output[3])
        out_weight = out_weight.view(-1, channels, levels).transpose(0, 1)
        out_bias = out_bias.view(channels, levels)
        # Each sub-pixel's draws, in sampling order.
        draws = torch.empty(size, size, channels, n, 1, dtype=torch.long, device=w.device)
        for i in range(size):
            for j in range(size):
                for ch in range(channels):
                    window = unit[:, :, i : i + p + 1, j : j + k].flatten(1)
                    h = torch.addmm(input_bias, window, input_weight)
                    for layer in layers:
                        h = layer.position(h, j)
                    h = torch.addmm(hidden_bias, h.relu(), hidden).relu_()
                    logits = torch.addmm(out_bias[ch], h, out_weight[ch])
                    probs = logits.float().softmax(dim=1)
                    draw = torch.multinomial(probs, 1, generator=generator, out=draws[i, j, ch])
                    unit[:, ch, i + p, j + p] = unit_levels[draw[:, 0]]
            for layer in layers:
                layer.end_row()
        return draws[..., 0].permute(3, 2, 0, 1).contiguous()
