"""genmodels.ops.gradient_penalty: every backend against the reference (the spec)."""

import pytest
import torch
from conftest import FLOAT_DTYPES, devices, noncontiguous, tolerance

from genmodels import _backend
from genmodels.ops import gradient_penalty
from genmodels.ops.gradient_penalty import _backward_op, _op, gradient_penalty_reference


def kernel_backends():
    return ["native", "triton"]


@pytest.fixture(autouse=True)
def _skip_unavailable_backend(request):
    """Skips a (backend, device) pair this install lacks, with the reason (Triton runs on
    CUDA tensors compiled, and on CPU tensors only under TRITON_INTERPRET=1)."""
    params = getattr(request.node, "callspec", None)
    params = params.params if params else {}
    backend, device = params.get("backend"), params.get("device", "cpu")
    check = {"native": _backend.native_available, "triton": _backend.triton_available}
    if backend in check:
        ok, why = check[backend](device)
        if not ok:
            pytest.skip(why)


SHAPES = [(5, 3, 7, 9), (4, 3, 33, 17), (3, 1), (7,), (2, 40000), (1, 5, 4099)]


def _reference(grads, target=1.0, one_sided=False, reduction="none"):
    from genmodels.ops._checks import reduce_batch

    return reduce_batch(gradient_penalty_reference(grads, target, one_sided), reduction)


def _value_and_grad(fn, grads, weight):
    x = grads.detach().clone().requires_grad_(True)
    out = fn(x)
    (g,) = torch.autograd.grad((out.float() * weight).sum(), x)
    return out, g


def _check_against_reference(grads, backend, target=1.0, one_sided=False, reduction="none"):
    w = torch.rand(grads.shape[0] if reduction == "none" else (), device=grads.device) + 0.5
    kw = dict(target=target, one_sided=one_sided, reduction=reduction)
    out, g = _value_and_grad(lambda x: gradient_penalty(x, backend=backend, **kw), grads, w)
    ref_out, ref_g = _value_and_grad(lambda x: _reference(x, **kw), grads, w)
    assert out.dtype == grads.dtype and out.shape == ref_out.shape
    assert g.dtype == grads.dtype and g.shape == grads.shape
    tol = tolerance(grads.dtype)
    torch.testing.assert_close(out.double(), ref_out.double(), **tol)
    # the gradient is g * coef: relative to the largest entry of the row
    scale = ref_g.double().abs().amax().clamp(min=1)
    torch.testing.assert_close(g.double() / scale, ref_g.double() / scale, **tol)
    return g


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(device, backend, dtype, shape):
    if backend == "triton" and device == "cpu" and shape[-1] >= 4099 and dtype != torch.float32:
        pytest.skip("large rows are covered in float32 under the interpreter (time)")
    torch.manual_seed(0)
    grads = (torch.randn(shape, device=device) / shape[-1] ** 0.5).to(dtype)
    for target, one_sided in ((1.0, False), (0.7, True), (0.0, False)):
        _check_against_reference(grads, backend, target=target, one_sided=one_sided)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions(device, backend, reduction):
    torch.manual_seed(1)
    grads = torch.randn(6, 2, 5, 5, device=device) * 0.3
    _check_against_reference(grads, backend, reduction=reduction)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("layout", ["noncontiguous", "channels_last", "transposed", "expanded"])
def test_layouts(device, backend, layout):
    torch.manual_seed(2)
    base = torch.randn(4, 3, 6, 5, device=device) * 0.2
    grads = {
        "noncontiguous": lambda: noncontiguous(base),
        "channels_last": lambda: base.contiguous(memory_format=torch.channels_last),
        "transposed": lambda: base.transpose(0, 1).contiguous().transpose(0, 1),
        "expanded": lambda: base[:, :1].expand(4, 3, 6, 5),
    }[layout]()
    g = _check_against_reference(grads, backend, one_sided=True, target=0.5)
    if layout == "channels_last":
        assert g.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", [*kernel_backends(), "reference"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_zero_rows_are_finite(device, backend, dtype):
    grads = torch.randn(3, 4, 5, device=device).to(dtype)
    grads[1] = 0
    x = grads.clone().requires_grad_(True)
    out = gradient_penalty(x, target=0.5, reduction="none", backend=backend)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert out[1].item() == 0.25
    assert (x.grad[1] == 0).all()
    # one-sided: a zero row is below the target and costs nothing
    out = gradient_penalty(x, target=0.5, one_sided=True, reduction="none", backend=backend)
    assert out[1].item() == 0


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", [*kernel_backends(), "reference"])
@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0), (0,)], ids=str)
def test_empty(device, backend, shape):
    x = torch.randn(shape, device=device, requires_grad=True)
    out = gradient_penalty(x, target=0.5, reduction="none", backend=backend)
    assert out.shape == (shape[0],)
    if shape[0]:
        torch.testing.assert_close(out, torch.full_like(out, 0.25))
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert (
        gradient_penalty(x, target=0.5, reduction="sum", backend=backend).item() == 0.25 * shape[0]
    )


@pytest.mark.parametrize("backend", [*kernel_backends(), "reference"])
@pytest.mark.parametrize("one_sided,reduction", [(False, "none"), (True, "none"), (False, "mean"),
                                                 (True, "sum")])  # fmt: skip
def test_gradcheck_and_gradgradcheck(backend, one_sided, reduction):
    torch.manual_seed(3)
    # norms spread around the target, none at 0 (the norm has a kink there)
    x = (
        torch.randn(4, 3, 5, dtype=torch.float64)
        * torch.tensor([0.1, 0.2, 0.3, 0.5]).view(4, 1, 1).double()
    )
    x.requires_grad_(True)

    def fn(t):
        return gradient_penalty(
            t, target=0.8, one_sided=one_sided, reduction=reduction, backend=backend
        )

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("backend", kernel_backends())
def test_third_order_matches_reference(backend):
    torch.manual_seed(4)
    x = (torch.randn(3, 7, dtype=torch.float64) * 0.4).requires_grad_(True)
    v = torch.randn(3, 7, dtype=torch.float64)

    def third(fn):
        (g1,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad((g1 * v).sum(), x, create_graph=True)
        (g3,) = torch.autograd.grad((g2 * g2).sum(), x)
        return g3

    got = third(lambda t: gradient_penalty(t, target=0.6, reduction="none", backend=backend))
    want = third(lambda t: _reference(t, target=0.6))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("backend", kernel_backends())
def test_opcheck(backend, device):
    torch.manual_seed(5)
    for grads in (
        torch.randn(3, 2, 4, 5, device=device, requires_grad=True),
        torch.randn(2, 3, 4, 4, device=device)
        .contiguous(memory_format=torch.channels_last)
        .requires_grad_(),
        torch.randn(3, 9, dtype=torch.float64, device=device, requires_grad=True),
    ):
        torch.library.opcheck(_op, (grads, 0.9, False, backend))
        torch.library.opcheck(_op, (grads, 0.9, True, backend))
        _, norm = _op(grads.detach(), 0.9, False, backend)
        gp = torch.rand(grads.shape[0], dtype=grads.dtype, device=device, requires_grad=True)
        gn = torch.rand(grads.shape[0], dtype=norm.dtype, device=device, requires_grad=True)
        torch.library.opcheck(
            _backward_op, (gp, gn, grads, norm.requires_grad_(), 0.9, False, backend)
        )


class _TinyCritic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 6 * 6, 1)

    def forward(self, x):
        return self.fc(torch.nn.functional.leaky_relu(self.conv(x), 0.2).flatten(1)).squeeze(1)


@pytest.mark.parametrize("backend", [*kernel_backends(), "reference"])
def test_penalty_reaches_critic_parameters(backend):
    """The op on autograd.grad(create_graph=True) gives the recipe's parameter gradients."""
    torch.manual_seed(6)
    critic = _TinyCritic().double()
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)

    def param_grads(penalty_fn):
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(xi).sum(), xi, create_graph=True)
        loss = penalty_fn(g)
        return loss, torch.autograd.grad(loss, list(critic.parameters()), materialize_grads=True)

    loss, grads = param_grads(lambda g: gradient_penalty(g, backend=backend))
    ref_loss, ref_grads = param_grads(lambda g: ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean())
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(grads=torch.zeros(3, 4, dtype=torch.int64)), RuntimeError, "grads must be"),
        (dict(grads=torch.tensor(1.0)), RuntimeError, "grads must have a batch"),
        (dict(grads=[1.0, 2.0]), TypeError, "grads must be a torch.Tensor"),
        (dict(target="1"), TypeError, "target must be a real number"),
        (dict(target=float("nan")), ValueError, "target must be finite"),
        (dict(one_sided=1), TypeError, "one_sided must be a bool"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(backend="cudnn"), ValueError, "backend must be one of"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(grads=torch.randn(3, 4))
    args.update(kwargs)
    grads = args.pop("grads")
    with pytest.raises(error, match=match):
        gradient_penalty(grads, **args)


def test_native_entry_points_check_their_inputs():
    from genmodels import _C

    g = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="grads must have a batch"):
        _C.gradient_penalty_forward_cpu(torch.tensor(1.0), 1.0, False)
    with pytest.raises(RuntimeError, match="norm must have dtype"):
        _C.gradient_penalty_backward_cpu(
            torch.ones(3), torch.ones(3), g, torch.ones(3, dtype=torch.float64), 1.0, False
        )
    with pytest.raises(RuntimeError, match="grad_penalty must have 3 elements"):
        _C.gradient_penalty_backward_cpu(torch.ones(2), torch.ones(3), g, torch.ones(3), 1.0, False)


@pytest.mark.slow
def test_torch_compile_fullgraph():
    torch.manual_seed(7)
    x = (torch.randn(4, 3, 5, 5) * 0.3).requires_grad_(True)
    fn = torch.compile(
        lambda g: gradient_penalty(g, target=0.5, backend="native"), fullgraph=True, dynamic=False
    )
    out = fn(x)
    (got,) = torch.autograd.grad(out, x)
    want_out, want = _value_and_grad(lambda t: _reference(t, 0.5, reduction="mean"), x, 1.0)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", kernel_backends())
def test_library_op_autograd(backend):
    """The torch.library op (what torch.compile traces; eager calls use an equivalent
    autograd.Function) has the same derivatives, the norm output's included."""
    torch.manual_seed(8)
    x = (torch.randn(3, 4, 5, dtype=torch.float64) * 0.3).requires_grad_(True)

    def via_op(t):
        penalty, norm = _op(t, 0.7, True, backend)
        return penalty + 0.5 * norm

    def via_reference(t):
        norm = torch.linalg.vector_norm(t.flatten(1), dim=1)
        return gradient_penalty_reference(t, 0.7, True) + 0.5 * norm

    w = torch.rand(3, dtype=torch.float64)
    _, got = _value_and_grad(via_op, x, w)
    _, want = _value_and_grad(via_reference, x, w)
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradgradcheck(via_op, (x,))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_native_cpu_autograd_node(reduction):
    """The eager CPU path (one C++ autograd node): both outputs' derivatives, to second
    order, against the reference."""
    from genmodels import _C

    torch.manual_seed(9)
    x = (torch.randn(3, 4, 5, dtype=torch.float64) * 0.3).requires_grad_(True)
    reduce = {"none": lambda v: v, "sum": torch.sum, "mean": torch.mean}[reduction]

    def via_node(t):
        out, norm = _C.gradient_penalty_autograd_cpu(t, 0.7, True, reduction)
        return out.sum() + (0.5 * norm).sum()

    def via_reference(t):
        norm = torch.linalg.vector_norm(t.flatten(1), dim=1)
        return reduce(gradient_penalty_reference(t, 0.7, True)).sum() + (0.5 * norm).sum()

    _, got = _value_and_grad(via_node, x, 1.0)
    _, want = _value_and_grad(via_reference, x, 1.0)
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(via_node, (x,))
    assert torch.autograd.gradgradcheck(via_node, (x,))
    # only the norm output used: the penalty's gradient is undefined (zero) in the node
    _, norm = _C.gradient_penalty_autograd_cpu(x, 0.7, True, reduction)
    (g,) = torch.autograd.grad(norm.sum(), x)
    torch.testing.assert_close(g, x / x.flatten(1).norm(dim=1).view(3, 1, 1))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_native_cpu_strided_output_gradients(dtype):
    """Per-sample outputs whose incoming gradient is broadcast (stride 0) or strided."""
    torch.manual_seed(10)
    grads = (torch.randn(6, 3, 5) * 0.2).to(dtype)
    w = torch.rand(12).to(dtype)[::2]  # stride 2
    for weight in (torch.ones(()).to(dtype).expand(6), w):
        x = grads.clone().requires_grad_(True)
        out = gradient_penalty(x, target=0.5, reduction="none", backend="native")
        (got,) = torch.autograd.grad(out, x, weight)
        xr = grads.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(_reference(xr, 0.5), xr, weight)
        torch.testing.assert_close(got.double(), want.double(), **tolerance(dtype))


def test_native_cpu_mean_of_empty_batch_is_nan():
    x = torch.randn(0, 3, requires_grad=True)
    out = gradient_penalty(x, reduction="mean", backend="native")
    assert out.shape == () and torch.isnan(out)
    assert torch.isnan(gradient_penalty(x, reduction="mean", backend="reference"))
    out.backward()
    assert x.grad.shape == x.shape


def test_native_cpu_results_do_not_depend_on_threads():
    torch.manual_seed(11)
    x = (torch.randn(3, 100003) * 0.01).requires_grad_(True)  # several chunks per row

    def run():
        out = gradient_penalty(x, reduction="none", backend="native")
        (g,) = torch.autograd.grad(out.sum(), x)
        return out, g

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = run()
        torch.set_num_threads(1)
        one = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_native_cpu_autograd_entry_checks_its_inputs():
    from genmodels import _C

    with pytest.raises(RuntimeError, match="reduction must be one of"):
        _C.gradient_penalty_autograd_cpu(torch.randn(3, 4), 1.0, False, "avg")
    with pytest.raises(RuntimeError, match="grads must have a batch"):
        _C.gradient_penalty_autograd_cpu(torch.tensor(1.0), 1.0, False, "mean")
    with pytest.raises(RuntimeError, match="grads must be a floating-point"):
        _C.gradient_penalty_autograd_cpu(torch.ones(3, dtype=torch.int64), 1.0, False, "mean")
