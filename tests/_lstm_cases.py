"""Tests shared by the PixelRNN recurrences (test_row_lstm.py, test_diagonal_lstm.py): each
file defines the `spec` fixture (an LstmSpec) and imports these tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from conftest import FLOAT_DTYPES, noncontiguous, tolerance

from genmodels import _backend

BACKENDS = ["native", "triton"]
# Odd sizes; Triton runs under the (slow) interpreter on CPU, so its cases stay small.
SHAPES = [(3, 4, 5, 7), (2, 8, 9, 4), (1, 12, 1, 6), (2, 4, 6, 1)]


@dataclasses.dataclass
class LstmSpec:
    name: str
    fn: Callable  # fn(gates_x, weight, bias, backend=...)
    reference: Callable  # reference(gates_x, weight, bias)
    recipe: Callable  # recipe(gates_x, weight, bias)
    kernel_size: int
    op: object
    backward_op: object
    op_args: Callable  # (gates_x, weight, bias, backend) -> args of op
    # Triton runs under the slow interpreter in CI: the other kernel sizes run natively only.
    triton: bool = True


def skip_unavailable(backend: str, device: str = "cpu", spec: LstmSpec | None = None) -> None:
    check = {"native": _backend.native_available, "triton": _backend.triton_available}
    ok, why = check[backend](device)
    if not ok:
        pytest.skip(why)
    if backend == "triton" and spec is not None and not spec.triton:
        pytest.skip("the Triton interpreter is slow: this kernel size runs natively only")


def make_inputs(spec, shape, dtype=torch.float32, bias=True, seed=0):
    torch.manual_seed(seed)
    b, g, h, w = shape
    c = g // 4
    gates_x = torch.randn(b, g, h, w, dtype=torch.float64).to(dtype)
    weight = (
        torch.randn(g, c, spec.kernel_size, dtype=torch.float64) / (c * spec.kernel_size) ** 0.5
    )
    weight = weight.to(dtype)
    bias_t = (0.5 * torch.randn(g, dtype=torch.float64)).to(dtype) if bias else None
    return gates_x, weight, bias_t


def value_and_grads(fn, gates_x, weight, bias, grad_out):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None
              for t in (gates_x, weight, bias)]  # fmt: skip
    out = fn(*leaves)
    inputs = [t for t in leaves if t is not None]
    # A one-row (or one-column) map does not use the weight at all in the reference.
    grads = torch.autograd.grad(out, inputs, grad_out.to(out.dtype), allow_unused=True)
    return out, [
        torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads, strict=True)
    ]


def assert_matches(out, grads, ref_out, ref_grads, dtype):
    tol = tolerance(dtype)
    if dtype == torch.float32:
        # A recurrence: rounding differences grow along the steps.
        tol = dict(rtol=1e-4, atol=1e-4)
    assert out.dtype == ref_out.dtype and out.shape == ref_out.shape
    torch.testing.assert_close(out.double(), ref_out.double(), **tol)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        scale = r.double().abs().amax().clamp(min=1)
        torch.testing.assert_close(g.double() / scale, r.double() / scale, **tol)


def check_against_reference(spec, backend, gates_x, weight, bias, seed=1):
    torch.manual_seed(seed)
    b, g, h, w = gates_x.shape
    grad_out = torch.randn(b, g // 4, h, w, dtype=torch.float64)
    out, grads = value_and_grads(
        lambda *a: spec.fn(*a, backend=backend), gates_x, weight, bias, grad_out
    )
    ref_out, ref_grads = value_and_grads(spec.reference, gates_x, weight, bias, grad_out)
    assert_matches(out, grads, ref_out, ref_grads, gates_x.dtype)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_matches_reference(spec, backend, dtype, shape, bias):
    skip_unavailable(backend, spec=spec)
    if backend == "triton" and (dtype != torch.float32 or not bias) and shape != SHAPES[0]:
        pytest.skip("the interpreter is slow: other dtypes on the first shape only")
    check_against_reference(spec, backend, *make_inputs(spec, shape, dtype, bias))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "noncontiguous"])
def test_layouts(spec, backend, layout):
    skip_unavailable(backend, spec=spec)
    gates_x, weight, bias = make_inputs(spec, (2, 8, 5, 6))
    if layout == "channels_last":
        gates_x = gates_x.contiguous(memory_format=torch.channels_last)
    else:
        gates_x, weight, bias = noncontiguous(gates_x), noncontiguous(weight), noncontiguous(bias)
    out = check_against_reference(spec, backend, gates_x, weight, bias)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_empty_batch(spec, backend):
    if backend != "reference":
        skip_unavailable(backend, spec=spec)
    gates_x, weight, bias = make_inputs(spec, (0, 8, 5, 6))
    gates_x.requires_grad_(True)
    weight.requires_grad_(True)
    out = spec.fn(gates_x, weight, bias, backend=backend)
    assert out.shape == (0, 2, 5, 6)
    out.sum().backward()
    assert gates_x.grad.shape == gates_x.shape
    assert torch.count_nonzero(weight.grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(spec, backend):
    skip_unavailable(backend, spec=spec)
    gates_x, weight, bias = make_inputs(spec, (2, 8, 3, 4), torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (gates_x, weight, bias))
    # fast_mode (random projections) for Triton: every evaluation runs the interpreter.
    fast = backend == "triton"
    assert torch.autograd.gradcheck(lambda *a: spec.fn(*a, backend=backend), inputs, fast_mode=fast)


def test_reference_gradgradcheck(spec):
    gates_x, weight, bias = make_inputs(spec, (1, 4, 2, 3), torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (gates_x, weight, bias))
    assert torch.autograd.gradgradcheck(spec.reference, inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "op"])
def test_double_backward_raises(spec, backend, compiled):
    skip_unavailable(backend, spec=spec)
    gates_x, weight, bias = make_inputs(spec, (2, 8, 3, 4))
    gates_x.requires_grad_(True)
    if compiled:
        out = spec.op(*spec.op_args(gates_x, weight, bias, backend))[0]
    else:
        out = spec.fn(gates_x, weight, bias, backend=backend)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        (g,) = torch.autograd.grad(out.square().sum(), gates_x, create_graph=True)
        g.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(spec, backend):
    skip_unavailable(backend, spec=spec)
    for shape, bias, fmt in (
        ((2, 8, 3, 5), True, torch.contiguous_format),
        ((0, 4, 3, 5), False, torch.contiguous_format),
        ((2, 8, 3, 5), True, torch.channels_last),
    ):
        gates_x, weight, b = make_inputs(spec, shape, bias=bias)
        gates_x = gates_x.contiguous(memory_format=fmt).requires_grad_(True)
        weight.requires_grad_(True)
        torch.library.opcheck(spec.op, spec.op_args(gates_x, weight, b, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph(spec, backend):
    skip_unavailable(backend, spec=spec)
    torch._dynamo.reset()
    gates_x, weight, bias = make_inputs(spec, (2, 8, 5, 6))
    grad_out = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    compiled = torch.compile(lambda *a: spec.fn(*a, backend=backend), fullgraph=True)
    out, grads = value_and_grads(compiled, gates_x, weight, bias, grad_out)
    ref_out, ref_grads = value_and_grads(spec.reference, gates_x, weight, bias, grad_out)
    assert_matches(out, grads, ref_out, ref_grads, torch.float32)


def test_recipe_matches_reference(spec):
    gates_x, weight, bias = make_inputs(spec, (3, 8, 5, 7), torch.float64)
    torch.testing.assert_close(
        spec.recipe(gates_x, weight, bias), spec.reference(gates_x, weight, bias)
    )


def _bad(spec, match, gates_x, weight, bias, exc=RuntimeError, backend="auto"):
    with pytest.raises(exc, match=match):
        spec.fn(gates_x, weight, bias, backend=backend)


def test_bad_inputs(spec):
    gates_x, weight, bias = make_inputs(spec, (2, 8, 5, 6))
    _bad(spec, "gates_x must be 4-D", gates_x[0], weight, bias)
    _bad(spec, "weight must be", gates_x, weight[..., None], bias)
    _bad(spec, "positive multiple of 4", gates_x[:, :6], weight, bias)
    _bad(spec, "weight must be \\[8, 2, k\\]", gates_x, weight[:4, :1], bias)
    _bad(spec, "bias must have shape", gates_x, weight, bias[:4])
    _bad(spec, "weight has dtype", gates_x, weight.double(), bias)
    _bad(spec, "bias has dtype", gates_x, weight, bias.double())
    _bad(spec, "gates_x must be float16", gates_x.long(), weight, bias)
    _bad(spec, "gates_x must be a torch.Tensor", gates_x.numpy(), weight, bias, exc=TypeError)
    _bad(spec, "backend must be one of", gates_x, weight, bias, exc=ValueError, backend="cuda")
    if torch.device("meta") != gates_x.device:
        _bad(spec, "weight is on meta", gates_x, weight.to("meta"), bias)
    wrong_k = torch.zeros(8, 2, spec.kernel_size + 1)
    _bad(spec, "kernel size", gates_x, wrong_k, bias)
