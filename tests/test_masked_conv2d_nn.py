"""genmodels.nn.MaskedConv2d and GatedPixelCNNLayer."""

import pytest
import torch
from conftest import kernel_backends
from torch import nn

from genmodels.nn import GatedPixelCNNLayer, MaskedConv2d
from genmodels.ops import make_mask

ALL_BACKENDS = [pytest.param("reference", id="reference"), *kernel_backends("cpu")]


def test_masked_conv2d_is_a_conv2d():
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 6, 5, padding=2)
    layer = MaskedConv2d(3, 6, 5, mask_type="A", color_groups=3)
    assert isinstance(layer, nn.Conv2d)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    layer.load_state_dict(plain.state_dict())
    assert repr(layer).startswith("Masked" + repr(plain)[:-1])
    assert "mask_type='A'" in repr(layer) and "color_groups=3" in repr(layer)
    x = torch.randn(2, 3, 6, 7)
    mask = make_mask(6, 3, 5, "A", 3)
    want = nn.functional.conv2d(x, plain.weight * mask, plain.bias, padding=2)
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_masked_conv2d_no_bias_and_tuple_kernel():
    layer = MaskedConv2d(2, 4, (3, 3), bias=False)
    assert layer.bias is None and layer.kernel_size == (3, 3) and layer.padding == (1, 1)
    assert layer(torch.randn(1, 2, 4, 4)).shape == (1, 4, 4, 4)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(kernel_size=4), ValueError, "kernel_size"),
        (dict(kernel_size=0), ValueError, "kernel_size"),
        (dict(kernel_size=(3, 5)), ValueError, "kernel_size"),
        (dict(mask_type="C"), ValueError, "mask_type"),
        (dict(color_groups=2), ValueError, "color_groups"),
        (dict(in_channels=0), ValueError, "in_channels"),
        (dict(out_channels=0), ValueError, "out_channels"),
    ],
)
def test_masked_conv2d_bad_arguments(kwargs, exc, match):
    args = dict(in_channels=3, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        MaskedConv2d(**args)


def _stack(backend, layers=3, k=3, c=4, in_channels=1, groups=1, num_classes=None):
    torch.manual_seed(0)
    mods = [
        GatedPixelCNNLayer(
            in_channels if i == 0 else c,
            c,
            k,
            first=i == 0,
            color_groups=groups,
            num_classes=num_classes,
            backend=backend,
        )
        for i in range(layers)
    ]
    for m in mods:  # non-zero class biases so the conditioning is exercised
        for p in m.parameters():
            if p.dim() == 2:
                nn.init.normal_(p)
    return nn.ModuleList(mods).double()


def _run(stack, x, y=None):
    v = h = x
    skips = 0
    for layer in stack:
        v, h, s = layer(v, h, y)
        skips = skips + s
    return h, skips


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gated_stack_has_no_blind_spot_and_no_leak(backend):
    """Output (i, j) depends on every pixel before (i, j) in raster order and on no other."""
    hgt = wid = 5
    stack = _stack(backend, layers=4, k=5).requires_grad_(False)
    # one copy of the image per output pixel, so one backward pass gives every gradient
    x = torch.randn(1, 1, hgt, wid, dtype=torch.float64).expand(hgt * wid, 1, hgt, wid)
    x = x.clone().requires_grad_(True)
    h, skips = _run(stack, x)
    pos = torch.arange(hgt * wid).view(hgt, wid)
    for out in (h, skips):
        picked = out.sum(1).flatten(1).diagonal()  # copy b: output pixel b (raster order)
        (g,) = torch.autograd.grad(picked.sum(), x, retain_graph=True)
        for b in range(hgt * wid):
            seen = g[b, 0] != 0
            assert torch.equal(seen, pos < b), (b, seen.int().tolist())


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gated_stack_color_groups(backend):
    """With RGB groups, output group g at (i, j) sees input groups < g at (i, j) only."""
    hgt = wid = 3
    stack = _stack(backend, layers=2, k=3, c=6, in_channels=3, groups=3)
    x = torch.randn(1, 3, hgt, wid, dtype=torch.float64, requires_grad=True)
    h, _ = _run(stack, x)
    i, j = 1, 1
    for g in range(3):
        (grad,) = torch.autograd.grad(h[0, 2 * g : 2 * g + 2, i, j].sum(), x, retain_graph=True)
        at_pixel = grad[0, :, i, j] != 0
        assert at_pixel.tolist() == [c < g for c in range(3)], g
        assert torch.all(grad[0, :, i, j + 1 :] == 0) and torch.all(grad[0, :, i + 1 :] == 0)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gated_layer_class_conditioning(backend):
    stack = _stack(backend, layers=2, num_classes=3)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 2])
    h0, _ = _run(stack, x, y0)
    h1, _ = _run(stack, x, y1)
    assert h0.shape == (2, 4, 4, 4)
    assert not torch.allclose(h0, h1)
    with pytest.raises(ValueError, match="labels"):
        _run(stack, x)


def test_gated_layer_backends_agree():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    outs = []
    for backend in [p.values[0] for p in ALL_BACKENDS if not p.marks]:
        stack = _stack(backend, layers=2, c=6, in_channels=3, groups=3, num_classes=2)
        outs.append(_run(stack, x, torch.tensor([0, 1])))
    for h, s in outs[1:]:
        torch.testing.assert_close(h, outs[0][0])
        torch.testing.assert_close(s, outs[0][1])
