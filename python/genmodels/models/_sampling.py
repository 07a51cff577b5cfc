"""Sampling PixelCNN and Gated PixelCNN: the naive sampler, the cached incremental one.

`naive` re-runs the network on the image cut below the current row for every sub-pixel
(the reference). The cached samplers keep every layer's input near the current position
and compute each layer's output at that one position only (the Gated PixelCNN's vertical
stack once per row, for the whole row), which is exact: every layer only looks up or
left, so a position's outputs are final once the sub-pixels before it are drawn.

Both draw with the same calls: for each sub-pixel in raster then colour order,
`torch.multinomial(logits.float().softmax(1), 1, generator=generator)` on the [n, levels]
logits of that sub-pixel; the same generator therefore gives the same images.

`cached_reference` is the pure-PyTorch spec of the cached computation (whole-image
activation tensors, one einsum per layer and position); `genmodels.ops.pixelcnn_sampling`
runs it natively (one C++ call for the whole image on CPU).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from genmodels.models._likelihood import to_unit
from genmodels.nn import Dropout, GatedPixelCNNLayer, MaskedConv2d
from genmodels.ops.masked_conv2d import gated_activation, make_mask

METHODS = ("cached", "naive")


def check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method  # type: ignore[return-value]


def check_labels(y: object, n: int, num_classes: int | None, device) -> None:
    if num_classes is None:
        raise ValueError("y: this model is not class-conditional (num_classes is None)")
    if not isinstance(y, Tensor) or y.shape != (n,) or y.dtype != torch.long:
        raise ValueError(f"y must be an int64 tensor of shape [{n}], got {y!r:.80}")
    if y.device != device:
        raise RuntimeError(f"y is on {y.device} but the model is on {device}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"y must hold classes in [0, {num_classes}), got {y.tolist()!r:.80}")


def cached(model, n: int, y: Tensor | None, generator, *, backend: str = "auto",
           record: bool = False):  # fmt: skip
    """(images, logits or None) from the cached sampler on the chosen backend."""
    from genmodels.ops import pixelcnn_sampling

    device = next(model.parameters()).device
    which = pixelcnn_sampling.resolve_backend(backend, device)
    if which == "native" and device.type == "cpu":
        return pixelcnn_sampling.sample(model, n, y, generator, backend=which, record=record)
    kernel = pixelcnn_sampling.position_kernel(which, device)
    return cached_reference(model, n, y, generator, record, kernel=kernel)


def draw(logits: Tensor, generator) -> Tensor:
    """One sub-pixel for every image: [n, levels] logits -> [n] levels (both samplers)."""
    probs = logits.float().softmax(dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def naive(model, n: int, y: Tensor | None, generator) -> Tensor:
    device = next(model.parameters()).device
    size, channels = model.image_size, model.in_channels
    x = torch.zeros(n, channels, size, size, dtype=torch.long, device=device)
    for i in range(size):
        # Every layer only looks up or left, so row i's logits depend on rows <= i alone:
        # the network runs on the image cut below row i (about half the work overall).
        rows = x[:, :, : i + 1]
        for j in range(size):
            for c in range(channels):
                logits = model._logits(model._net(rows, y))[:, :, c, i, j]
                x[:, c, i, j] = draw(logits, generator)
    return x


# --- what the cached samplers understand --------------------------------------------------

_PIXELCNN_BLOCK = (nn.ReLU, MaskedConv2d, nn.ReLU, MaskedConv2d, nn.ReLU, None, MaskedConv2d)
_HEAD = (nn.ReLU, MaskedConv2d, nn.ReLU, MaskedConv2d)


def _exact(module: nn.Module, kind) -> bool:
    if kind is None:  # the dropout slot
        return type(module) in (nn.Identity, Dropout)
    return type(module) is kind


def hook_or_parametrization_reason(model: nn.Module) -> str | None:
    """A forward hook (global or on any submodule) or a parametrization in `model`, which a
    sampler that reads the weights and reimplements forward would skip; or None."""
    from torch.nn.modules import module as module_mod

    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return "global forward hooks are registered"
    for name, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return f"module {name or 'model'} has forward hooks"
        if parametrize.is_parametrized(m):
            return f"module {name or 'model'} is parametrized"
    return None


def unsupported_reason(model) -> str | None:
    """Why the cached sampler cannot reproduce this model's forward pass, or None.

    It reads the weights and reimplements the forward pass of the two classes as they are
    written here, so anything that changes what forward computes (a subclass, a replaced
    submodule, a hook, a parametrization, active dropout) sends sampling to `naive`."""
    from genmodels.models.pixelcnn import GatedPixelCNN, PixelCNN

    if type(model) not in (PixelCNN, GatedPixelCNN):
        return f"{type(model).__name__} is not PixelCNN or GatedPixelCNN itself"
    reason = hook_or_parametrization_reason(model)
    if reason is not None:
        return reason
    for m in model.modules():
        if isinstance(m, nn.Dropout) and m.p > 0 and m.training:
            return "dropout is active (training mode): call model.eval() first"
    params = list(model.parameters())
    if any(p.dtype not in (torch.float32, torch.float64) for p in params):
        return "the cached sampler runs float32 and float64 models"
    if len({(p.dtype, p.device) for p in params}) != 1:
        return "the parameters have mixed dtypes or devices"
    if isinstance(model, PixelCNN):
        return _pixelcnn_reason(model)
    return _gated_reason(model)


def _sequence_reason(seq: nn.Module, kinds, name: str) -> str | None:
    if type(seq) is not nn.Sequential or len(seq) != len(kinds):
        return f"{name} is not the constructor's Sequential"
    if not all(_exact(m, k) for m, k in zip(seq, kinds, strict=True)):
        return f"{name} holds modules the constructor does not make"
    return None


def _conv_reason(conv, name, mask_type, k=None, groups=None) -> str | None:
    if type(conv) is not MaskedConv2d or conv.mask_type != mask_type:
        return f"{name} is not a mask-{mask_type} MaskedConv2d"
    if (k is not None and conv.kernel_size != (k, k)) or (
        groups is not None and conv.color_groups != groups
    ):
        return f"{name} does not have the constructor's kernel size or colour groups"
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
        return f"{name} has a stride, dilation or groups the sampler does not model"
    return None


def _pixelcnn_reason(model) -> str | None:
    g = model.color_groups
    reasons = [_conv_reason(model.input, "input", "A", 7, g)]
    if type(model.blocks) is not nn.ModuleList:
        return "blocks is not a ModuleList"
    for b, block in enumerate(model.blocks):
        reasons.append(_sequence_reason(block, _PIXELCNN_BLOCK, f"blocks[{b}]"))
        if reasons[-1] is None:
            for idx, k in ((1, 1), (3, 3), (6, 1)):
                reasons.append(_conv_reason(block[idx], f"blocks[{b}][{idx}]", "B", k, g))
    reasons += _head_reasons(model)
    if model.class_bias is not None and type(model.class_bias) is not nn.Embedding:
        reasons.append("class_bias is not an Embedding")
    return next((r for r in reasons if r is not None), None)


def _head_reasons(model) -> list[str | None]:
    reasons = [_sequence_reason(model.output, _HEAD, "output")]
    if reasons[0] is None:
        for idx in (1, 3):
            reasons.append(_conv_reason(model.output[idx], f"output[{idx}]", "B", 1,
                                        model.color_groups))  # fmt: skip
    return reasons


def _gated_reason(model) -> str | None:
    g = model.color_groups
    reasons = []
    if type(model.layers) is not nn.ModuleList:
        return "layers is not a ModuleList"
    for n, layer in enumerate(model.layers):
        name = f"layers[{n}]"
        if type(layer) is not GatedPixelCNNLayer or layer.first != (n == 0):
            return f"{name} is not the constructor's GatedPixelCNNLayer"
        if layer.color_groups != g or layer.residual != (n > 0):
            return f"{name} does not have the constructor's colour groups or residual"
        v, h = ("VA", "HA") if n == 0 else ("VB", "HB")
        k = layer.conv_v.kernel_size[0]
        reasons += [
            _conv_reason(layer.conv_v, f"{name}.conv_v", v, k),
            _conv_reason(layer.conv_h, f"{name}.conv_h", h, k, g),
            _conv_reason(layer.h_out, f"{name}.h_out", "B", 1, g),
            _conv_reason(layer.skip, f"{name}.skip", "B", 1, g),
        ]
        if type(layer.v_to_h) is not nn.Conv2d or layer.v_to_h.kernel_size != (1, 1):
            reasons.append(f"{name}.v_to_h is not a 1x1 Conv2d")
        if not _exact(layer.dropout, None):
            reasons.append(f"{name}.dropout is not Dropout or Identity")
        for table in (layer.cond_v, layer.cond_h):
            if table is not None and type(table) is not nn.Embedding:
                reasons.append(f"{name} has a class table that is not an Embedding")
        if (layer.cond_v is None) != (model.num_classes is None):
            reasons.append(f"{name} conditioning does not match num_classes")
    reasons += _head_reasons(model)
    return next((r for r in reasons if r is not None), None)


def fallback_warning(reason: str) -> None:
    warnings.warn(
        f"genmodels: sampling with method='naive' (slow): {reason}", RuntimeWarning, stacklevel=4
    )


# --- the pure-PyTorch spec of the cached computation --------------------------------------


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Conv:
    """A masked convolution evaluated at single positions or single rows of a padded,
    whole-image input [n, C_in, H + 2c, W + 2c]."""

    def __init__(self, conv: nn.Conv2d, acc: torch.dtype, kernel=None):
        c_out, c_in, k, _ = conv.weight.shape
        self.run_at = None
        if kernel is not None:
            from genmodels.ops.pixelcnn_sampling import pack_dense

            packed, runs = pack_dense(conv)
            bias = None if conv.bias is None else conv.bias.detach()
            self.run_at = lambda x, i, j: kernel(x, packed, bias, runs, i, j)
        w = conv.weight.detach().to(acc)
        if isinstance(conv, MaskedConv2d):
            mask = make_mask(c_out, c_in, k, conv.mask_type, conv.color_groups, dtype=acc,
                             device=w.device)  # fmt: skip
            w = w * mask
        self.weight, self.k, self.c = w, k, k // 2
        self.bias = None if conv.bias is None else conv.bias.detach().to(acc)

    def at(self, padded: Tensor, i: int, j: int) -> Tensor:
        """The output [n, C_out] at image position (i, j)."""
        if self.run_at is not None:
            return self.run_at(padded, i, j)
        window = padded[:, :, i : i + self.k, j : j + self.k]
        out = torch.einsum("bcyx,ocyx->bo", window, self.weight)
        return out if self.bias is None else out + self.bias

    def row(self, padded: Tensor, i: int) -> Tensor:
        """The output [n, C_out, W] along image row i."""
        out = F.conv2d(padded[:, :, i : i + self.k], self.weight, self.bias)
        return out[:, :, 0]


class _Padded:
    """A layer input kept for the whole image, zero-padded by c on every side."""

    def __init__(self, n, channels, size, c, dtype, device):
        self.c = c
        self.data = torch.zeros(n, channels, size + 2 * c, size + 2 * c, dtype=dtype,
                                device=device)  # fmt: skip

    def put(self, values: Tensor, i: int, j: int) -> None:
        self.data[:, :, i + self.c, j + self.c] = values

    def put_row(self, values: Tensor, i: int) -> None:
        self.data[:, :, i + self.c, self.c : self.data.shape[3] - self.c] = values


class SamplingCaches:
    """Every layer input the cached samplers keep while sampling (freed when it returns)."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def class_rows(model, n: int, y: Tensor | None, device) -> Tensor | None:
    if model.num_classes is None:
        return None
    if y is None:
        y = torch.arange(n, device=device) % model.num_classes
    return y


def cached_reference(model, n: int, y: Tensor | None, generator, record: bool = False,
                     kernel=None):  # fmt: skip
    """(images, logits or None): the cached sampler in plain PyTorch, the spec of the
    native one. `record` also returns the logits each sub-pixel was drawn from, laid out
    like `model(images)`'s [n, levels, C, H, W]. `kernel` (see
    genmodels.ops.pixelcnn_sampling.position_kernel) replaces the einsum of each layer at
    a position."""
    from genmodels.models.pixelcnn import PixelCNN

    p = next(model.parameters())
    acc, device = _acc(p.dtype), p.device
    size, channels, levels = model.image_size, model.in_channels, model.levels
    x = torch.zeros(n, channels, size, size, dtype=torch.long, device=device)
    logits_all = (
        torch.zeros(n, levels, channels, size, size, dtype=p.dtype, device=device)
        if record
        else None
    )
    spec = _PixelCNNSpec if isinstance(model, PixelCNN) else _GatedSpec
    net = spec(model, n, y, lambda conv: _Conv(conv, acc, kernel))
    for i in range(size):
        net.start_row(i)
        for j in range(size):
            for c in range(channels):
                out = net.at(i, j).to(p.dtype).view(n, channels, levels)
                logits = out[:, c]
                if logits_all is not None:
                    logits_all[:, :, c, i, j] = logits
                x[:, c, i, j] = draw(logits, generator)
                net.x.put(to_unit(x[:, :, i, j], levels, p.dtype).to(acc), i, j)
    return x, logits_all


class _PixelCNNSpec:
    def __init__(self, model, n, y, conv):
        acc = _acc(next(model.parameters()).dtype)
        device, size = model.input.weight.device, model.image_size
        self.input = conv(model.input)
        self.blocks = [(conv(b[1]), conv(b[3]), conv(b[6])) for b in model.blocks]
        self.head = (conv(model.output[1]), conv(model.output[3]))
        y = class_rows(model, n, y, device)
        self.cls = None if y is None else model.class_bias(y).detach().to(acc)
        hidden = model.input.weight.shape[0] // 2
        self.x = _Padded(n, model.in_channels, size, 3, acc, device)
        self.mids = [_Padded(n, hidden, size, 1, acc, device) for _ in model.blocks]
        self.caches = SamplingCaches({"x": self.x.data} | {
            f"block{b}": m.data for b, m in enumerate(self.mids)})  # fmt: skip

    def start_row(self, i):
        pass

    def at(self, i, j):
        h = self.input.at(self.x.data, i, j)
        if self.cls is not None:
            h = h + self.cls
        for (first, mid, last), cache in zip(self.blocks, self.mids, strict=True):
            cache.put(first.at(h.relu()[:, :, None, None], 0, 0).relu(), i, j)
            h = h + last.at(mid.at(cache.data, i, j).relu()[:, :, None, None], 0, 0)
        o = self.head[0].at(h.relu()[:, :, None, None], 0, 0).relu()
        return self.head[1].at(o[:, :, None, None], 0, 0)


class _GatedSpec:
    def __init__(self, model, n, y, conv):
        acc = _acc(next(model.parameters()).dtype)
        device, size = model.output[1].weight.device, model.image_size
        self.groups = model.color_groups
        y = class_rows(model, n, y, device)

        def cond(table):
            return None if table is None else table(y).detach().to(acc)

        self.layers = [
            dict(v=conv(lay.conv_v), h=conv(lay.conv_h), vh=conv(lay.v_to_h),
                 out=conv(lay.h_out), skip=conv(lay.skip),
                 cond_v=cond(lay.cond_v), cond_h=cond(lay.cond_h), residual=lay.residual)
            for lay in model.layers
        ]  # fmt: skip
        self.head = (conv(model.output[1]), conv(model.output[3]))
        hidden = model.output[1].weight.shape[0]
        self.x = _Padded(n, model.in_channels, size, 3, acc, device)
        # layer l reads v and h of layer l - 1, padded by its own c
        pads = [lay["v"].c for lay in self.layers[1:]]
        self.v = [_Padded(n, hidden, size, c, acc, device) for c in pads]
        self.h = [_Padded(n, hidden, size, c, acc, device) for c in pads]
        self.addends: list[Tensor] = []
        self.caches = SamplingCaches(
            {"x": self.x.data}
            | {f"v{n}": p.data for n, p in enumerate(self.v)}
            | {f"h{n}": p.data for n, p in enumerate(self.h)}
        )

    def start_row(self, i):
        """The vertical stack along row i: it sees rows above i only."""
        self.addends = []
        src = self.x.data
        for n, lay in enumerate(self.layers):
            pre = lay["v"].row(src, i)  # [n, 2C, W]
            if lay["cond_v"] is not None:
                pre = pre + lay["cond_v"][:, :, None]
            if n + 1 < len(self.layers):
                self.v[n].put_row(gated_activation(pre[:, :, None], self.groups)[:, :, 0], i)
                src = self.v[n].data
            addend = lay["vh"].row(pre[:, :, None], 0)
            if lay["cond_h"] is not None:
                addend = addend + lay["cond_h"][:, :, None]
            self.addends.append(addend)

    def at(self, i, j):
        src, skips = self.x, 0
        for n, lay in enumerate(self.layers):
            pre = lay["h"].at(src.data, i, j) + self.addends[n][:, :, j]
            gated = gated_activation(pre[:, :, None, None], self.groups)
            skips = skips + lay["skip"].at(gated, 0, 0)
            if n + 1 < len(self.layers):
                h = lay["out"].at(gated, 0, 0)
                if lay["residual"]:
                    h = h + src.data[:, :, i + src.c, j + src.c]
                self.h[n].put(h, i, j)
                src = self.h[n]
        o = self.head[0].at(skips.relu()[:, :, None, None], 0, 0).relu()
        return self.head[1].at(o[:, :, None, None], 0, 0)
