import pytest
import torch
from conftest import FLOAT_DTYPES, noncontiguous

import genmodels
from genmodels import recipes
from genmodels.ops import grad_reverse
from genmodels.ops.grad_reverse import grad_reverse_reference

BACKENDS = ["auto", "native", "triton", "reference"]
SHAPES = [(7,), (5, 13), (3, 1, 17), (2, 3, 5, 7), (0, 500)]


def layouts(x):
    yield "contiguous", x
    yield "noncontiguous", noncontiguous(x)
    if x.dim() == 4:
        yield "channels_last", x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_identity_forward_and_scaled_negated_backward(shape, dtype, backend):
    lam = 0.37
    base = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    for _, x in layouts(base):
        x = x.detach().requires_grad_()
        out = grad_reverse(x, lam, backend=backend)
        assert out.shape == x.shape and out.dtype == dtype
        assert torch.equal(out, x)
        grad = torch.randn(shape).to(dtype)
        (gx,) = torch.autograd.grad(out, x, grad)
        # The reference's multiplication, in the input's dtype: bit-identical.
        assert torch.equal(gx, grad * -lam)
        assert gx.dtype == dtype


def test_every_backend_and_the_recipe_agree():
    x = torch.randn(16, 500, requires_grad=True)
    grad = torch.randn(16, 500)
    expected = torch.autograd.grad(recipes.grad_reverse_recipe(x, 2.5), x, grad)[0]
    for backend in BACKENDS:
        got = torch.autograd.grad(grad_reverse(x, 2.5, backend=backend), x, grad)[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    got = torch.autograd.grad(torch.ops.genmodels.grad_reverse(x, 2.5), x, grad)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("lam", [0.0, 1.0, -0.5, 3])
def test_lambda_values_and_types(lam):
    x = torch.randn(4, 3, requires_grad=True)
    grad_reverse(x, lam).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -float(lam)))
    y = torch.randn(4, 3, requires_grad=True)
    grad_reverse(y, torch.tensor(float(lam))).sum().backward()  # a 0-d tensor
    torch.testing.assert_close(y.grad, x.grad)


def test_gradient_reaches_earlier_layers_reversed():
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    layer(x).pow(2).sum().backward()
    plain = layer.weight.grad.clone()
    layer.zero_grad()
    grad_reverse(layer(x), 0.5).pow(2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, -0.5 * plain)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_gradcheck_and_gradgradcheck_of_the_backward_float64(backend):
    # The op's gradient differs from its forward's on purpose, so gradcheck applies to
    # its backward: (x, g) -> d/dx <grad_reverse(x * x), g> = -lambda * 2 x g, a smooth
    # function whose first and second derivatives autograd must get right.
    def backward_of(apply):
        def fn(x, g):
            return torch.autograd.grad(apply(x * x), x, g, create_graph=True)[0]

        return fn

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ours = backward_of(lambda t: grad_reverse(t, 0.7, backend=backend))
    op = backward_of(lambda t: torch.ops.genmodels.grad_reverse(t, 0.7))
    for fn in (ours, op):
        torch.testing.assert_close(fn(x, g), -0.7 * 2 * x * g)
        assert torch.autograd.gradcheck(fn, (x, g))
        assert torch.autograd.gradgradcheck(fn, (x, g))


def test_double_backward_is_the_reversed_scale_again():
    # d/dg of the backward (-lambda * g) is -lambda: the second-order gradient through
    # grad_reverse is reversed and scaled as the first.
    x = torch.randn(6, requires_grad=True)
    g = torch.randn(6, requires_grad=True)
    (gx,) = torch.autograd.grad(grad_reverse(x, 2.0), x, g, create_graph=True)
    (gg,) = torch.autograd.grad(gx.sum(), g)
    torch.testing.assert_close(gg, torch.full_like(g, -2.0))


def test_opcheck():
    for x in (
        torch.randn(3, 5, requires_grad=True),
        torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_(),
        noncontiguous(torch.randn(4, 6)).requires_grad_(),
        torch.randn(0, 7, requires_grad=True),
    ):
        torch.library.opcheck(torch.ops.genmodels.grad_reverse.default, (x, 0.5))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(compile_backend):
    torch._dynamo.reset()

    def step(x, w):
        return (grad_reverse(x @ w, 0.25) ** 2).sum()

    x = torch.randn(8, 5)
    w = torch.randn(5, 3, requires_grad=True)
    expected = torch.autograd.grad(step(x, w), w)[0]
    compiled = torch.compile(step, fullgraph=True, backend=compile_backend)
    got = torch.autograd.grad(compiled(x, w), w)[0]
    torch.testing.assert_close(got, expected)


def test_module():
    layer = genmodels.nn.GradientReversal(0.5)
    assert "lambda_=0.5" in repr(layer) and dict(layer.state_dict()) == {}
    x = torch.randn(4, 3, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -0.5))
    layer.lambda_ = 2.0  # a schedule assigns it
    x.grad = None
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -2.0))
    with pytest.raises(ValueError, match="backend"):
        genmodels.nn.GradientReversal(backend="cuda")
    with pytest.raises(ValueError, match="lambda_"):
        genmodels.nn.GradientReversal(float("nan"))


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((torch.arange(3),), {}, RuntimeError, "x must be float"),
        (([1.0, 2.0],), {}, TypeError, "x must be a torch.Tensor"),
        ((torch.randn(3), "1"), {}, TypeError, "lambda_ must be a real number"),
        ((torch.randn(3), float("inf")), {}, ValueError, "lambda_ must be finite"),
        ((torch.randn(3), True), {}, TypeError, "lambda_"),
        ((torch.randn(3),), {"backend": "cuda"}, ValueError, "backend must be one of"),
    ],
)
def test_bad_inputs(args, kwargs, error, words):
    with pytest.raises(error, match=words):
        grad_reverse(*args, **kwargs)


def test_reference_is_a_copy_and_eager_is_a_view():
    x = torch.randn(5)
    assert grad_reverse_reference(x, 1.0).data_ptr() != x.data_ptr()
    assert grad_reverse(x, 1.0).data_ptr() == x.data_ptr()
