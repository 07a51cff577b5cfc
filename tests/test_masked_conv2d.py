"""masked_conv2d: every backend against the reference, causality, gradients, bad inputs."""

import importlib
import os
import subprocess
import sys

import pytest
import torch
from conftest import FLOAT_DTYPES, kernel_backends, noncontiguous

from genmodels import _backend
from genmodels.ops import gate, make_mask, masked_conv2d, masked_conv2d_gated
from genmodels.ops.masked_conv2d import (
    MASK_TYPES,
    _kernel_reads_masked,
    gated_activation,
    masked_conv2d_gated_reference,
    masked_conv2d_reference,
)

BACKENDS = kernel_backends("cpu")
NATIVE = [p for p in BACKENDS if p.values[0] == "native"]
TRITON = [p for p in BACKENDS if p.values[0] == "triton"]
ALL_BACKENDS = [pytest.param("reference", id="reference"), *BACKENDS]


def _tol(dtype):
    # sums of up to k*k*C_in products, compared with a float32/float64 reference
    return {
        torch.float16: dict(rtol=1e-2, atol=1e-2),
        torch.bfloat16: dict(rtol=5e-2, atol=8e-2),
        torch.float32: dict(rtol=1e-4, atol=1e-4),
        torch.float64: dict(rtol=1e-10, atol=1e-10),
    }[dtype]


def _inputs(n, c_in, c_out, h, w, k, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = (c_in * k * k) ** -0.5
    x = torch.randn(n, c_in, h, w, generator=g).to(dtype)
    weight = (torch.randn(c_out, c_in, k, k, generator=g) * scale).to(dtype)
    b = torch.randn(c_out, generator=g).to(dtype) if bias else None
    return x, weight, b


def _check_against_reference(backend, x, weight, bias, mask_type, groups, grads=True):
    dtype = x.dtype
    tol = _tol(dtype)
    leaves = [t.detach().requires_grad_(grads) for t in (x, weight)]  # same layout as given
    if bias is not None:
        leaves.append(bias.detach().requires_grad_(grads))
    xl, wl = leaves[0], leaves[1]
    bl = leaves[2] if bias is not None else None
    y = masked_conv2d(xl, wl, bl, mask_type=mask_type, color_groups=groups, backend=backend)
    # the spec, in float64
    r64 = [t.detach().double().requires_grad_(grads) for t in (x, weight)]
    rb = bias.detach().double().requires_grad_(grads) if bias is not None else None
    ref = masked_conv2d_reference(r64[0], r64[1], rb, mask_type, groups)
    assert y.shape == ref.shape and y.dtype == dtype
    torch.testing.assert_close(y.double(), ref, **tol)
    if not grads or y.numel() == 0:
        return
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    y.backward(g.to(dtype))
    ref.backward(g.double())
    inputs = [xl, wl] + ([bl] if bl is not None else [])
    refs = r64 + ([rb] if rb is not None else [])
    for name, got, want in zip(("x", "weight", "bias")[: len(inputs)], inputs, refs, strict=True):
        scale = max(1.0, want.grad.abs().max().item())
        torch.testing.assert_close(
            got.grad.double() / scale, want.grad / scale, **tol, msg=lambda m, n=name: f"{n}: {m}"
        )


# --- tap sets -----------------------------------------------------------------------------


def test_tap_sets_k3():
    on = {
        "A": [[1, 1, 1], [1, 0, 0], [0, 0, 0]],
        "B": [[1, 1, 1], [1, 1, 0], [0, 0, 0]],
        "VA": [[1, 1, 1], [0, 0, 0], [0, 0, 0]],
        "VB": [[1, 1, 1], [1, 1, 1], [0, 0, 0]],
        "HA": [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
        "HB": [[0, 0, 0], [1, 1, 0], [0, 0, 0]],
    }
    for mask_type, expected in on.items():
        mask = make_mask(2, 2, 3, mask_type)
        assert mask.tolist() == [[expected] * 2] * 2, mask_type


def test_color_group_center():
    # channels R R G G B B: group of channel i is i * 3 // 6
    a = make_mask(6, 6, 3, "A", 3)[:, :, 1, 1]
    b = make_mask(6, 6, 3, "B", 3)[:, :, 1, 1]
    gi = torch.arange(6) // 2
    assert torch.equal(a, (gi[None, :] < gi[:, None]).float())
    assert torch.equal(b, (gi[None, :] <= gi[:, None]).float())
    # everything but the center follows the spatial mask
    assert torch.equal(make_mask(6, 6, 3, "B", 3)[:, :, 0], torch.ones(6, 6, 3))


# --- against the reference ----------------------------------------------------------------

_NATIVE_CASES = [
    # (k, c_in, c_out, groups, mask_type)
    (k, c_in, c_out, g, mt)
    for k in (1, 3, 5, 7)
    for c_in, c_out, g in ((1, 7, 1), (3, 9, 3), (3, 5, 1), (5, 7, 1), (6, 9, 3))
    for mt in ("A", "B")
] + [(k, 6, 9, g, mt) for k in (3, 5) for g in (1, 3) for mt in ("VA", "VB", "HA", "HB")]


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("k,c_in,c_out,groups,mask_type", _NATIVE_CASES)
def test_native_matches_reference(backend, k, c_in, c_out, groups, mask_type):
    x, w, b = _inputs(3, c_in, c_out, 5, 7, k, torch.float64)
    _check_against_reference(backend, x, w, b, mask_type, groups)


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("k,c_in,c_out,groups", [(3, 64, 67, 1), (7, 3, 33, 3), (5, 63, 66, 3)])
def test_native_dtypes(backend, dtype, k, c_in, c_out, groups):
    x, w, b = _inputs(2, c_in, c_out, 6, 5, k, dtype)
    _check_against_reference(backend, x, w, b, "B", groups)


_TRITON_CASES = [
    (1, 3, 5, 1, "B"),
    (3, 1, 7, 1, "A"),
    (3, 6, 9, 3, "A"),
    (5, 5, 7, 1, "B"),
    (7, 3, 9, 3, "A"),
    (3, 6, 9, 3, "HB"),
    (3, 6, 9, 1, "VA"),
    (5, 6, 9, 1, "VB"),
    (3, 20, 19, 1, "HA"),
]


@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("k,c_in,c_out,groups,mask_type", _TRITON_CASES)
def test_triton_matches_reference(backend, k, c_in, c_out, groups, mask_type):
    x, w, b = _inputs(3, c_in, c_out, 5, 4, k, torch.float64)
    _check_against_reference(backend, x, w, b, mask_type, groups)


@pytest.mark.parametrize("backend", TRITON)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_triton_dtypes(backend, dtype):
    x, w, b = _inputs(2, 6, 9, 4, 5, 3, dtype)
    _check_against_reference(backend, x, w, b, "B", 3)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "noncontiguous"])
def test_layouts(backend, layout):
    x, w, b = _inputs(3, 6, 9, 5, 6, 3, torch.float32)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
    else:
        x, w, b = noncontiguous(x), noncontiguous(w), noncontiguous(b)
    _check_against_reference(backend, x, w, b, "A", 3)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_batch_sizes_and_bias(backend, n, bias):
    x, w, b = _inputs(n, 3, 5, 4, 3, 3, torch.float32, bias=bias)
    _check_against_reference(backend, x, w, b, "B", 1)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_image(backend):
    x, w, b = _inputs(2, 3, 5, 0, 4, 3, torch.float32)
    y = masked_conv2d(x, w, b, backend=backend)
    assert y.shape == (2, 5, 0, 4)


# --- causality by perturbation (does not use the mask code) -------------------------------


def _raster_after(h, w, i, j, inclusive):
    """Boolean [h, w]: pixels at (inclusive) or after (i, j) in raster order."""
    pos = torch.arange(h * w).view(h, w)
    return pos >= i * w + j if inclusive else pos > i * w + j


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("k", [3, 5])
def test_causality_by_perturbation(backend, mask_type, k):
    h, w = 4, 5
    x, wt, b = _inputs(1, 2, 3, h, w, k, torch.float64)
    y = masked_conv2d(x, wt, b, mask_type=mask_type, backend=backend)
    for i, j in [(0, 0), (1, 2), (3, 4), (2, 0)]:
        future = _raster_after(h, w, i, j, inclusive=(mask_type == "A"))
        x2 = x.clone()
        x2[:, :, future] += torch.randn_like(x2[:, :, future])
        y2 = masked_conv2d(x2, wt, b, mask_type=mask_type, backend=backend)
        assert torch.equal(y2[:, :, i, j], y[:, :, i, j]), (i, j)
    # and the past does reach the output: the pixel to the left, and (B) the pixel itself
    x3 = x.clone()
    x3[:, :, 2, 1] += 1.0
    y3 = masked_conv2d(x3, wt, b, mask_type=mask_type, backend=backend)
    assert not torch.equal(y3[:, :, 2, 2], y[:, :, 2, 2])
    assert torch.equal(y3[:, :, 2, 1], y[:, :, 2, 1]) == (mask_type == "A")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("mask_type", ["A", "B", "HA", "HB"])
def test_color_group_causality(backend, mask_type):
    h, w, groups, c = 3, 4, 3, 6  # channels R R G G B B
    x, wt, b = _inputs(1, c, c, h, w, 3, torch.float64)
    y = masked_conv2d(x, wt, b, mask_type=mask_type, color_groups=groups, backend=backend)
    strict = mask_type in ("A", "HA")
    i, j = 1, 2
    for go in range(groups):
        out = slice(2 * go, 2 * go + 2)
        x2 = x.clone()
        x2[:, :, _raster_after(h, w, i, j, inclusive=False)] += 1.0  # every later pixel
        first_bad = go if strict else go + 1  # input groups >= this one are the future
        x2[:, 2 * first_bad :, i, j] += 1.0
        y2 = masked_conv2d(x2, wt, b, mask_type=mask_type, color_groups=groups, backend=backend)
        assert torch.equal(y2[:, out, i, j], y[:, out, i, j]), go
        if first_bad > 0:  # the earlier groups at (i, j) do reach it
            x3 = x.clone()
            x3[:, : 2 * first_bad, i, j] += 1.0
            y3 = masked_conv2d(x3, wt, b, mask_type=mask_type, color_groups=groups, backend=backend)
            assert not torch.equal(y3[:, out, i, j], y[:, out, i, j]), go


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_stack_tap_sets_by_perturbation(backend):
    h, w, k = 5, 5, 3
    x, wt, b = _inputs(1, 2, 2, h, w, k, torch.float64)
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    i, j = 2, 2
    seen = {  # which input pixels may influence output (i, j)
        "VA": rows < i,
        "VB": rows <= i,
        "HA": (rows == i) & (cols < j),
        "HB": (rows == i) & (cols <= j),
    }
    for mask_type, allowed in seen.items():
        y = masked_conv2d(x, wt, b, mask_type=mask_type, backend=backend)
        x2 = x.clone()
        x2[:, :, ~allowed] += torch.randn_like(x2[:, :, ~allowed])
        y2 = masked_conv2d(x2, wt, b, mask_type=mask_type, backend=backend)
        assert torch.equal(y2[:, :, i, j], y[:, :, i, j]), mask_type


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("mask_type,groups", [("A", 1), ("B", 3), ("VA", 1), ("HB", 3)])
def test_masked_taps_get_zero_gradient(backend, mask_type, groups):
    x, w, b = _inputs(2, 6, 6, 5, 5, 5, torch.float32)
    w.requires_grad_(True)
    masked_conv2d(x, w, b, mask_type=mask_type, color_groups=groups, backend=backend).pow(
        2
    ).sum().backward()
    mask = make_mask(6, 6, 5, mask_type, groups).bool()
    assert torch.all(w.grad[~mask] == 0)
    assert torch.all(w.grad[mask] != 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    x, w, b = _inputs(2, 3, 3, 3, 4, 3, torch.float64)
    args = [t.requires_grad_(True) for t in (x, w, b)]
    for mask_type, groups in (("A", 3), ("B", 1)):
        f = lambda *a, mt=mask_type, g=groups: masked_conv2d(  # noqa: E731
            *a, mask_type=mt, color_groups=g, backend=backend
        )
        assert torch.autograd.gradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    from genmodels.ops.masked_conv2d import _backward_op, _gated_op, _op

    x, w, b = _inputs(2, 3, 6, 3, 4, 3, torch.float32)
    x.requires_grad_(True)
    w.requires_grad_(True)
    torch.library.opcheck(_op, (x, w, b, "A", 3, backend))
    torch.library.opcheck(_op, (x, w, None, "VB", 1, backend))
    g = torch.randn(2, 6, 3, 4)
    torch.library.opcheck(_backward_op, (g, x.detach(), w.detach(), "B", 3, backend, True, True))
    torch.library.opcheck(_backward_op, (g, x.detach(), w.detach(), "B", 1, backend, False, True))
    a = torch.randn(2, 6, 1, 1, requires_grad=True)
    torch.library.opcheck(_gated_op, (x, w, b, a, "HB", 3, backend))


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gated_op_honours_its_backend(backend, monkeypatch):
    """The torch.library gated op runs the backend it is given (it once ran Triton always)."""
    module = importlib.import_module("genmodels.ops.masked_conv2d")

    x, w, b = _inputs(2, 3, 6, 3, 4, 3, torch.float64)
    a = torch.randn(2, 6, 1, 1, dtype=torch.float64)
    calls = []
    real = module._conv_kernel
    monkeypatch.setattr(module, "_conv_kernel", lambda *args: calls.append(args[-1]) or real(*args))
    y = module._gated_op(x, w, b, a, "HB", 3, backend)
    expected = masked_conv2d_gated_reference(x, w, b, a, "HB", 3)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    assert calls == (["native"] if backend == "native" else [])


@pytest.mark.parametrize("backend", NATIVE)
def test_torch_compile_matches_eager(backend):
    x, w, b = _inputs(2, 3, 6, 5, 4, 3, torch.float32)
    w.requires_grad_(True)

    def f(x, w, b):
        return masked_conv2d(x, w, b, mask_type="A", color_groups=3, backend=backend).tanh().sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    eager_out = f(x, w, b)
    (eager_grad,) = torch.autograd.grad(eager_out, w)
    out = compiled(x, w, b)
    (grad,) = torch.autograd.grad(out, w)
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(grad, eager_grad)


# --- gated epilogue -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("groups,addend_shape", [(1, None), (1, (2, 12, 1, 1)), (3, (2, 12, 4, 5))])
def test_gated_matches_reference(backend, groups, addend_shape):
    x, w, b = _inputs(2, 6, 12, 4, 5, 3, torch.float64)
    a = None if addend_shape is None else torch.randn(addend_shape, dtype=torch.float64)
    leaves = [t.requires_grad_(True) for t in (x, w, b, *(() if a is None else (a,)))]
    y = masked_conv2d_gated(x, w, b, a, mask_type="HB", color_groups=groups, backend=backend)
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    ra = ref_leaves[3] if a is not None else None
    ref = masked_conv2d_gated_reference(*ref_leaves[:3], ra, "HB", groups)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    for got, want in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize("backend", TRITON)
def test_gated_triton_bfloat16(backend):
    x, w, b = _inputs(2, 6, 12, 4, 5, 3, torch.bfloat16)
    y = masked_conv2d_gated(x, w, b, mask_type="B", color_groups=3, backend=backend)
    ref = masked_conv2d_gated_reference(x.double(), w.double(), b.double(), None, "B", 3)
    torch.testing.assert_close(y.double(), ref, **_tol(torch.bfloat16))


# --- bad inputs ---------------------------------------------------------------------------


def _bad(exc, match, *args, **kwargs):
    with pytest.raises(exc, match=match):
        masked_conv2d(*args, **kwargs)


def test_bad_inputs():
    x, w, b = _inputs(1, 3, 6, 4, 4, 3, torch.float32)
    _bad(ValueError, "kernel size", x, torch.randn(6, 3, 2, 2))
    _bad(ValueError, "kernel size", x, torch.randn(6, 3, 0, 0))
    _bad(RuntimeError, "square", x, torch.randn(6, 3, 3, 5))
    _bad(ValueError, "color_groups", x, torch.randn(6, 3, 3, 3), color_groups=2)
    _bad(ValueError, "out_channels", x, torch.randn(5, 3, 3, 3), color_groups=3)
    _bad(ValueError, "out_channels=0", x, torch.randn(0, 3, 3, 3))
    _bad(ValueError, "in_channels=0", x[:, :0], torch.randn(6, 0, 3, 3))
    _bad(ValueError, "color_groups", x, w, color_groups=0)
    _bad(TypeError, "color_groups", x, w, color_groups=1.0)
    _bad(ValueError, "mask_type", x, w, mask_type="C")
    _bad(TypeError, "mask_type", x, w, mask_type=None)
    _bad(RuntimeError, "weight must have shape", x, torch.randn(6, 4, 3, 3))
    _bad(RuntimeError, "x must be a 4-D", x[0], w)
    _bad(RuntimeError, "weight must be a 4-D", x, w[0])
    _bad(RuntimeError, "weight has dtype", x, w.double())
    _bad(RuntimeError, "bias must have shape", x, w, torch.randn(5))
    _bad(RuntimeError, "bias has dtype", x, w, b.double())
    _bad(RuntimeError, "x must be float16", x.long(), w)
    _bad(TypeError, "weight must be a torch.Tensor", x, [1.0])
    _bad(ValueError, "backend", x, w, backend="cuda")
    if torch.cuda.is_available():
        _bad(RuntimeError, "weight is on", x, w.cuda())
    else:
        _bad(RuntimeError, "weight is on", x, w.to("meta"))
    with pytest.raises(ValueError, match="2 \\* color_groups"):
        masked_conv2d_gated(x, torch.randn(9, 3, 3, 3), color_groups=3)
    with pytest.raises(RuntimeError, match="addend"):
        masked_conv2d_gated(x, w, addend=torch.randn(1, 5, 1, 1))


@pytest.mark.parametrize("backend", NATIVE)
def test_native_entry_checks(backend):
    """The C++ entry points check their arguments too (for direct callers)."""
    fwd = _backend.native_entry("masked_conv2d", "forward", torch.device("cpu"))
    x, w, b = _inputs(1, 3, 6, 4, 4, 3, torch.float32)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        fwd(x, torch.randn(6, 2, 3, 3), b, [0, 1], None)
    with pytest.raises(RuntimeError, match="taps must lie"):
        fwd(x, w, b, [9], None)
    with pytest.raises(RuntimeError, match="center tap is not in taps"):
        fwd(x, w, b, [0, 1], torch.ones(6, 3))


def test_every_mask_type_is_tested():
    """The kernel case lists, not a literal, must cover every tap set the op accepts."""
    assert {case[-1] for case in _NATIVE_CASES} == set(MASK_TYPES)
    assert {case[-1] for case in _TRITON_CASES} == set(MASK_TYPES)
    assert set(_NON_FINITE_CASES_MASKS) == set(MASK_TYPES)


# --- non-finite values where the mask looks away ----------------------------------------

_NON_FINITE_CASES = [
    # (mask_type, color_groups, k)
    ("A", 1, 7), ("B", 1, 3), ("A", 3, 3), ("B", 3, 5), ("VA", 1, 3), ("VB", 1, 3),
    ("HA", 3, 3), ("HB", 1, 5), ("HB", 3, 3),
]  # fmt: skip
_NON_FINITE_CASES_MASKS = {case[0] for case in _NON_FINITE_CASES}


def _dependencies(mask, groups, c_out, row, col, h, w, go):
    """[C_in, H, W] bool: the inputs that output pixel (row, col) of group `go` reads."""
    k = mask.shape[-1]
    c = k // 2
    per = c_out // groups
    taps = mask[go * per : (go + 1) * per].amax(0).bool()  # [C_in, k, k]
    dep = torch.zeros(mask.shape[1], h, w, dtype=torch.bool)
    for ky in range(k):
        for kx in range(k):
            py, px = row + ky - c, col + kx - c
            if 0 <= py < h and 0 <= px < w:
                dep[:, py, px] |= taps[:, ky, kx]
    return dep


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("mask_type,groups,k", _NON_FINITE_CASES)
def test_non_finite_values_where_the_mask_looks_away(backend, bad, mask_type, groups, k):
    """A NaN or Inf in a masked tap, or in an input pixel or channel that an output does not
    read (a future pixel under mask A), has no influence on that output nor on the
    gradients: every backend skips what the mask removes (the reference too)."""
    c_in, c_out, h, w = 3 * groups, 2 * 3 * groups, 6, 7
    x, weight, bias = _inputs(2, c_in, c_out, h, w, k, torch.float32)
    mask = make_mask(c_out, c_in, k, mask_type, groups)
    clean = masked_conv2d(x, weight, bias, mask_type=mask_type, color_groups=groups,
                          backend=backend)  # fmt: skip
    # Masked taps.
    w_bad = torch.where(mask.bool(), weight, torch.full_like(weight, bad)).requires_grad_()
    y = masked_conv2d(x, w_bad, bias, mask_type=mask_type, color_groups=groups, backend=backend)
    torch.testing.assert_close(y, clean, rtol=1e-5, atol=1e-5)
    (gw,) = torch.autograd.grad(y.sum(), w_bad)
    assert torch.isfinite(gw).all() and not gw[mask == 0].any()
    # Masked positions: everything output pixel (row, col) of group go does not read.
    for go in range(groups):
        row, col = 3, 4
        dep = _dependencies(mask, groups, c_out, row, col, h, w, go)
        x_bad = torch.where(dep, x, torch.full_like(x, bad)).requires_grad_()
        wl = weight.clone().requires_grad_()
        y = masked_conv2d(x_bad, wl, bias, mask_type=mask_type, color_groups=groups,
                          backend=backend)  # fmt: skip
        per = c_out // groups
        out = y[:, go * per : (go + 1) * per, row, col]
        torch.testing.assert_close(out, clean[:, go * per : (go + 1) * per, row, col],
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        gx, gw = torch.autograd.grad(out.sum(), (x_bad, wl))
        # The weight gradient of a kept tap sums over every pixel (0 * NaN elsewhere is
        # NaN, as in any convolution); a masked tap's is exactly zero all the same.
        assert (gw[mask == 0] == 0).all()
        assert torch.isfinite(gx).all() and not gx[:, ~dep].any()


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("path", ["chunks", "rects"])
@pytest.mark.parametrize("mask_type,groups,k", [("A", 1, 7), ("B", 1, 3), ("A", 3, 3)])
def test_non_finite_values_on_each_native_cpu_path(backend, path, mask_type, groups, k,
                                                   monkeypatch):  # fmt: skip
    """The input check runs only where the CPU path reads masked positions (the
    rectangles' bounding box, a colour-group centre): with the gather path it is skipped,
    with the box it is not, and either way the masked NaN/Inf has no influence."""
    monkeypatch.setenv("GM_MASKED_CONV_CPU_PATH", path)
    weight = torch.randn(2 * 3 * groups, 3 * groups, k, k)
    x = torch.randn(2, 3 * groups, 6, 7)
    reads = _kernel_reads_masked(x, weight, mask_type, groups, "native")
    assert reads == (path == "rects" or groups > 1)
    for bad in (float("nan"), float("inf")):
        test_non_finite_values_where_the_mask_looks_away(backend, bad, mask_type, groups, k)


@pytest.mark.skipif(not _backend.triton_available("cuda")[0], reason="triton is not installed")
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_triton_kernels_compile_for_sm90(dtype):
    """Ahead-of-time compile for an H100 (no GPU needed), so GPU-only Triton errors show here."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        # Under the interpreter triton.language calls take interpreter semantics and the
        # real compiler fails on them ("'int' object has no attribute 'value'"): compile in
        # a fresh process without it.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        test = f"{__file__}::test_triton_kernels_compile_for_sm90[{dtype}]"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout
        return
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from genkernels import masked_conv2d as kernels

    def jit(fn):  # under TRITON_INTERPRET=1 the kernels are interpreter wrappers
        return fn if hasattr(fn, "cache_key") else triton.runtime.jit.JITFunction(fn.fn)

    target = GPUTarget("cuda", 90, 32)
    ptr = "*" + dtype
    sig = {n: ptr for n in ("x_ptr", "w_ptr", "cm_ptr", "b_ptr", "add_ptr", "y_ptr")}
    sig.update(
        {n: "i32" for n in "M H W CIN OUT_C PER sw_o sw_i sw_y sw_x sa_n sa_c sa_h sa_w".split()}
    )
    consts = dict(
        K=3, TAPS=0b11111, CENTER_MASKED=True, HAS_BIAS=True, HAS_ADD=True, GATED=True,
        UPCAST=False, PRECISION="tf32" if dtype == "fp32" else "ieee", ACC=triton.language.float32,
        BLOCK_M=64, BLOCK_N=32, BLOCK_K=32,
    )  # fmt: skip
    sig.update({n: "constexpr" for n in consts})
    triton.compile(
        ASTSource(fn=jit(kernels._conv_kernel), signature=sig, constexprs=consts), target=target
    )
    sig = {"x_ptr": ptr, "g_ptr": ptr, "taps_ptr": "*i32", "part_ptr": "*fp32"}
    sig.update({n: "i32" for n in "M H W CIN COUT ROWS_PER_SPLIT".split()})
    consts = dict(
        K=3, UPCAST=False, PRECISION=consts["PRECISION"], ACC=triton.language.float32,
        BLOCK_M=64, BLOCK_I=32, BLOCK_O=32,
    )  # fmt: skip
    sig.update({n: "constexpr" for n in consts})
    triton.compile(
        ASTSource(fn=jit(kernels._weight_grad_kernel), signature=sig, constexprs=consts),
        target=target,
    )


@pytest.mark.parametrize("backend", TRITON)
def test_torch_compile_fused_gated(backend):
    x, w, b = _inputs(2, 3, 6, 5, 4, 3, torch.float32)
    w.requires_grad_(True)

    def f(x, w, b):
        return masked_conv2d_gated(x, w, b, mask_type="HB", color_groups=3, backend=backend).sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    (eager_grad,) = torch.autograd.grad(f(x, w, b), w)
    out = compiled(x, w, b)
    (grad,) = torch.autograd.grad(out, w)
    torch.testing.assert_close(out, f(x, w, b))
    torch.testing.assert_close(grad, eager_grad)


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("path", ["chunks", "single", "rects", "rects-exact", "rects-box"])
@pytest.mark.parametrize(
    "k,mask_type,groups", [(3, "A", 3), (5, "B", 1), (7, "HA", 3), (5, "VB", 1), (1, "B", 3)]
)
def test_native_cpu_paths(backend, path, k, mask_type, groups, monkeypatch):
    """Every CPU formulation (active-tap im2col + GEMM in cache-sized chunks, the same as
    one whole-tensor GEMM, rectangles of kept taps run as dense convolutions: the exact
    rectangles, or their bounding box with the masked taps zeroed) whichever one the size
    and dtype pick by default."""
    path, _, cover = path.partition("-")
    monkeypatch.setenv("GM_MASKED_CONV_CPU_PATH", path)
    if cover:
        monkeypatch.setenv("GM_MASKED_CONV_COVER", cover)
    x, w, b = _inputs(3, 6, 9, 5, 6, k, torch.float64)
    _check_against_reference(
        backend, x.contiguous(memory_format=torch.channels_last), w, b, mask_type, groups
    )
    x, w, b = _inputs(2, 6, 9, 4, 3, k, torch.bfloat16)
    _check_against_reference(backend, x, w, b, mask_type, groups)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("need", ["x", "weight", "bias", "weight,bias"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("groups", [1, 3])
def test_gradients_of_some_inputs(backend, need, with_bias, groups):
    """Only the inputs that require grad get one, and it equals the reference's (the
    native backend's eager path is a C++ autograd node that counts its tensor inputs)."""
    if "bias" in need and not with_bias:
        pytest.skip("no bias to differentiate")
    x, w, b = _inputs(2, 6, 9, 4, 5, 3, torch.float64, bias=with_bias)
    wanted = set(need.split(","))
    leaves = {"x": x, "weight": w, "bias": b}
    for name, t in leaves.items():
        if t is not None:
            t.requires_grad_(name in wanted)
    y = masked_conv2d(x, w, b, mask_type="A", color_groups=groups, backend=backend)
    ref = masked_conv2d_reference(*(t.detach() if t is not None else None for t in (x, w, b)),
                                  "A", groups)  # fmt: skip
    torch.testing.assert_close(y.detach(), ref)
    got = torch.autograd.grad(y.pow(2).sum(), [leaves[n] for n in sorted(wanted)])
    ref_leaves = {n: (t.detach().requires_grad_(n in wanted) if t is not None else None)
                  for n, t in leaves.items()}  # fmt: skip
    ref = masked_conv2d_reference(ref_leaves["x"], ref_leaves["weight"], ref_leaves["bias"],
                                  "A", groups)  # fmt: skip
    want = torch.autograd.grad(ref.pow(2).sum(), [ref_leaves[n] for n in sorted(wanted)])
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)
    for name, t in leaves.items():
        if t is not None and name not in wanted:
            assert t.grad is None


# --- the Gated PixelCNN activation ----------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "noncontiguous"])
@pytest.mark.parametrize("groups", [1, 3])
def test_gate_against_reference(backend, dtype, layout, groups):
    g = torch.Generator().manual_seed(0)
    # pre-activations over tanh's and the sigmoid's whole range, both polynomial branches
    pre = (torch.randn(3, 6 * groups, 5, 7, generator=g) * 4).to(dtype)
    pre = {"contiguous": pre, "channels_last": pre.contiguous(memory_format=torch.channels_last),
           "noncontiguous": noncontiguous(pre)}[layout]  # fmt: skip
    pre.requires_grad_(True)
    ref_pre = pre.detach().double().requires_grad_(True)
    out = gate(pre, groups, backend=backend)
    ref = gated_activation(ref_pre, groups)
    assert out.dtype == dtype and out.shape == ref.shape
    tol = _tol(dtype)
    torch.testing.assert_close(out.double(), ref, **tol)
    grad = torch.randn(ref.shape, generator=g)
    out.backward(grad.to(dtype))
    ref.backward(grad.double())
    torch.testing.assert_close(pre.grad.double(), ref_pre.grad, **tol)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gate_gradcheck_and_edges(backend):
    pre = torch.randn(2, 12, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gate(t, 3, backend=backend), (pre,))
    extreme = torch.tensor([-1e4, -30.0, -1e-7, 0.0, 1e-7, 30.0, 1e4]).view(1, 1, 1, 7)
    pairs = torch.cat([extreme, extreme.flip(-1)], dim=1)  # a and b over the same range
    torch.testing.assert_close(gate(pairs, backend=backend), gated_activation(pairs))
    empty = gate(torch.randn(0, 4, 3, 3), backend=backend)
    assert empty.shape == (0, 2, 3, 3)


def test_gate_bad_input():
    with pytest.raises(RuntimeError, match="pre must be"):
        gate(torch.randn(2, 6, 3, 3), 2)
    with pytest.raises(RuntimeError, match="pre must be float16"):
        gate(torch.ones(2, 4, 3, 3, dtype=torch.long))


@pytest.mark.parametrize("backend", NATIVE)
def test_native_backward_refuses_create_graph(backend):
    x, w, b = _inputs(2, 4, 6, 5, 5, 3, torch.float32)
    x.requires_grad_(True)
    y = masked_conv2d(x, w, b, backend=backend)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)
    pre = torch.randn(2, 4, 3, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(gate(pre, backend=backend).sum(), pre, create_graph=True)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_autocast_casts_like_conv2d(backend):
    """Under torch.autocast the op runs in the autocast dtype, as F.conv2d does, whatever
    ATen calls the kernels make inside."""
    x, w, b = _inputs(2, 6, 9, 5, 5, 7, torch.float32)
    w.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = masked_conv2d(x, w, b, mask_type="A", backend=backend)
        plain = torch.nn.functional.conv2d(x, w, b, padding=3)
        gated = masked_conv2d_gated(x, w[:8], b[:8], mask_type="B", backend=backend)
    assert y.dtype == plain.dtype == gated.dtype == torch.bfloat16
    ref = masked_conv2d_reference(x.bfloat16(), w.detach().bfloat16(), b.bfloat16(), "A", 1)
    torch.testing.assert_close(y, ref, **_tol(torch.bfloat16))
    y.float().sum().backward()
    assert w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()
