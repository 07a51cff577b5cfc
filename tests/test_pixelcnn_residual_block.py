"""genmodels.ops.pixelcnn_residual_block: every backend against the reference, gradients,
dropout semantics, torch.library checks, bad inputs, and PixelCNN's use of it."""

import pytest
import torch
from conftest import FLOAT_DTYPES, kernel_backends, noncontiguous

from genmodels import _backend
from genmodels.models import PixelCNN
from genmodels.nn import Dropout, MaskedConv2d
from genmodels.ops import dropout as dropout_op
from genmodels.ops import make_mask, masked_conv2d
from genmodels.ops.pixelcnn_residual_block import (
    pixelcnn_residual_block,
    pixelcnn_residual_block_reference,
)
from genmodels.recipes import pixelcnn_residual_block_recipe

BACKENDS = kernel_backends("cpu")
TOL = {
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
}


def params(c=6, c2=4, k=3, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    ws = [r(c2, c, 1, 1, scale=c**-0.5), r(c2, c2, k, k, scale=(c2 * k * k) ** -0.5),
          r(c, c2, 1, 1, scale=c2**-0.5)]  # fmt: skip
    bs = [r(c2, scale=0.1), r(c2, scale=0.1), r(c, scale=0.1)] if bias else [None] * 3
    return [ws[0], bs[0], ws[1], bs[1], ws[2], bs[2]]


def block(x, ps, backend, p=0.0, seed=None, **kw):
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return pixelcnn_residual_block(x, *ps, p=p, generator=generator, backend=backend, **kw)


def skip_unsupported(backend, dtype):
    if backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter truncates float32 to bfloat16 (GPUs round to nearest)")


def _grads(x, ps, backend, p=0.0, seed=None, **kw):
    x = x.detach().clone().requires_grad_(True)
    ps = [t.detach().clone().requires_grad_(True) if t is not None else None for t in ps]
    out = block(x, ps, backend, p, seed, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(out.dtype)
    out.backward(g)
    return out, [x.grad] + [t.grad for t in ps if t is not None]


# --- every backend against the reference ------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_matches_reference(backend, dtype, p):
    skip_unsupported(backend, dtype)
    x = torch.randn(3, 6, 5, 7, generator=torch.Generator().manual_seed(1)).to(dtype)
    ps = params(dtype=dtype)
    out, grads = _grads(x, ps, backend, p, seed=4)
    want, want_grads = _grads(x, ps, "reference", p, seed=4)
    torch.testing.assert_close(out, want, **TOL[dtype])
    for got, ref in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, ref, **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "shape,c2,k,groups",
    [((2, 6, 1, 1), 2, 3, 1), ((1, 4, 3, 9), 2, 5, 1), ((2, 6, 4, 4), 6, 3, 3),
     ((3, 12, 5, 3), 6, 3, 3), ((1, 2, 11, 2), 2, 1, 1)],
)  # fmt: skip
def test_odd_sizes_colour_groups_and_kernels(backend, shape, c2, k, groups):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ps = params(shape[1], c2, k, torch.float64)
    out, grads = _grads(x, ps, backend, 0.5, seed=1, color_groups=groups)
    want, want_grads = _grads(x, ps, "reference", 0.5, seed=1, color_groups=groups)
    torch.testing.assert_close(out, want)
    for got, ref in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "noncontiguous"])
def test_layouts(backend, layout):
    x = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_in = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else (
        noncontiguous(x)
    )  # fmt: skip
    ps = params(dtype=torch.float64)
    torch.testing.assert_close(block(x_in, ps, backend, 0.2, 5), block(x, ps, "reference", 0.2, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_biases_and_empty_batch(backend):
    ps = params(dtype=torch.float64, bias=False)
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    out, grads = _grads(x, ps, backend, 0.4, seed=2)
    want, want_grads = _grads(x, ps, "reference", 0.4, seed=2)
    torch.testing.assert_close(out, want)
    for got, ref in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, ref)
    empty = torch.zeros(0, 6, 4, 3, dtype=torch.float64)
    out, grads = _grads(empty, params(dtype=torch.float64), backend, 0.4, seed=2)
    assert out.shape == empty.shape
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    if backend == "triton":
        fast = dict(fast_mode=True)  # the interpreter runs every evaluation
    else:
        fast = {}
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    ps = [t.requires_grad_() for t in params(dtype=torch.float64)]
    for p in (0.0, 0.5):

        def fn(x, *ps, p=p):
            return block(x, ps, backend, p, seed=7)

        assert torch.autograd.gradcheck(fn, (x, *ps), **fast)


def test_reference_gradgradcheck():
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    ps = [t.requires_grad_() for t in params(4, 2, dtype=torch.float64)]
    assert torch.autograd.gradgradcheck(
        lambda x, *ps: block(x, ps, "reference", 0.5, seed=3), (x, *ps)
    )


def test_native_refuses_double_backward():
    if not _backend.native_available("cpu")[0]:
        pytest.skip("genmodels._C is not built")
    x = torch.randn(1, 6, 3, 3, requires_grad=True)
    out = block(x, params(), "native")
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


@pytest.mark.parametrize("backend", ["native", "triton"])
def test_library_op_double_backward_through_the_reference(backend):
    ok = (_backend.native_available if backend == "native" else _backend.triton_available)("cpu")
    if not ok[0]:
        pytest.skip(ok[1])
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    ps = [t.requires_grad_() for t in params(4, 2, dtype=torch.float64)]
    seed = torch.tensor([11, 22])
    out = torch.ops.genmodels.pixelcnn_residual_block(x, *ps, seed, 0.5, 1, backend)[0]
    want = pixelcnn_residual_block_reference(x, *ps, seed, 0.5, 1)
    (g,) = torch.autograd.grad((out**2).sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad((want**2).sum(), x, create_graph=True)
    torch.testing.assert_close(g, gw)
    torch.testing.assert_close(*(torch.autograd.grad(t.sum(), ps[0])[0] for t in (g, gw)))


# --- dropout: the dropout op's masks ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_the_dropout_ops_mask_on_the_channels_last_branch(backend):
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    ps = params(dtype=torch.float64)
    w1, b1, w2, b2, w3, b3 = ps
    h = masked_conv2d(torch.relu(x), w1, b1, backend="reference")
    h = torch.relu(masked_conv2d(torch.relu(h), w2, b2, backend="reference"))
    h = dropout_op(h.contiguous(memory_format=torch.channels_last), 0.3,
                   generator=torch.Generator().manual_seed(6), backend="reference")  # fmt: skip
    want = x + masked_conv2d(h, w3, b3, backend="reference")
    torch.testing.assert_close(block(x, ps, backend, 0.3, seed=6), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_p0_and_p1(backend):
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    ps = params(dtype=torch.float64)
    no_drop = block(x, ps, "reference", 0.0)
    state = torch.get_rng_state()
    torch.testing.assert_close(block(x, ps, backend, 0.7, training=False), no_drop)
    torch.testing.assert_close(block(x, ps, backend, 0.0), no_drop)
    assert torch.equal(torch.get_rng_state(), state), "no seed is drawn without dropout"
    w1, b1, w2, b2, w3, b3 = ps
    only_bias = x + b3.view(1, -1, 1, 1)
    torch.testing.assert_close(block(x, ps, backend, 1.0), only_bias)


def test_seed_comes_from_the_default_generator():
    x = torch.randn(2, 6, 3, 3)
    ps = params()
    torch.manual_seed(5)
    a = pixelcnn_residual_block(x, *ps, p=0.5, backend="reference")
    torch.manual_seed(5)
    b = pixelcnn_residual_block(x, *ps, p=0.5, backend="reference")
    c = pixelcnn_residual_block(x, *ps, p=0.5, backend="reference")
    assert torch.equal(a, b) and not torch.equal(b, c)


# --- torch.library -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    x = torch.randn(2, 6, 3, 4, requires_grad=True)
    ps = [t.requires_grad_() for t in params()]
    seed = torch.tensor([3, -4])
    op = torch.ops.genmodels.pixelcnn_residual_block.default
    torch.library.opcheck(op, (x, *ps, seed, 0.3, 1, backend))
    torch.library.opcheck(op, (x, *params(bias=False), None, 0.0, 1, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    x = torch.randn(2, 6, 4, 4)
    ps = params()

    def step(x, *ps):
        return (pixelcnn_residual_block(x, *ps, p=0.25, backend=backend) ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        torch.manual_seed(3)
        xi = x.clone().requires_grad_()
        pi = [t.clone().requires_grad_() for t in ps]
        loss = fn(xi, *pi)
        loss.backward()
        results.append([loss, xi.grad] + [t.grad for t in pi])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_compile_inductor_matches_eager():
    if not _backend.native_available("cpu")[0]:
        pytest.skip("genmodels._C is not built")
    torch._dynamo.reset()
    x = torch.randn(2, 6, 4, 4, requires_grad=True)
    ps = [t.requires_grad_() for t in params()]

    def step(x, *ps):
        return (pixelcnn_residual_block(x, *ps, p=0.5) ** 2).sum()

    torch.manual_seed(4)
    want = step(x, *ps)
    want_grads = torch.autograd.grad(want, [x, *ps])
    torch.manual_seed(4)
    got = torch.compile(step, fullgraph=True)(x, *ps)
    got_grads = torch.autograd.grad(got, [x, *ps])
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


# --- bad inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(x=torch.randn(2, 6, 3)), RuntimeError, "x must be a 4-D"),
        (dict(x=torch.randint(0, 3, (2, 6, 3, 3))), RuntimeError, "x must be float"),
        (dict(w1=torch.randn(4, 5, 1, 1)), RuntimeError, "w1"),
        (dict(w2=torch.randn(4, 4, 2, 2)), ValueError, "w2"),
        (dict(w3=torch.randn(6, 4, 3, 3)), RuntimeError, "w3"),
        (dict(b1=torch.randn(5)), RuntimeError, "b1"),
        (dict(b3=torch.randn(6, dtype=torch.float64)), RuntimeError, "b3"),
        (dict(p=1.5), ValueError, "p"),
        (dict(color_groups=4), ValueError, "color_groups"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(training=1), TypeError, "training"),
    ],
)
def test_bad_inputs_name_the_argument(change, error, match):
    w1, b1, w2, b2, w3, b3 = params()
    args = dict(x=torch.randn(2, 6, 3, 3), w1=w1, b1=b1, w2=w2, b2=b2, w3=w3, b3=b3)
    kw = dict(p=0.1, color_groups=1, backend="reference", training=True)
    for key, value in change.items():
        (args if key in args else kw)[key] = value
    with pytest.raises(error, match=match):
        pixelcnn_residual_block(*args.values(), **kw)


def test_non_finite_input_goes_to_the_reference():
    x = torch.randn(1, 6, 3, 3, dtype=torch.float64)
    x[0, :, 2, 2] = float("nan")  # the last pixel: no earlier output may read it
    out = block(x, params(dtype=torch.float64), "auto")
    assert torch.isfinite(out[0, :, :2]).all() and torch.isfinite(out[0, :, 2, :2]).all()


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "native"])
@pytest.mark.parametrize("need", ["all", "x", "w1", "w3", "b2"])
def test_backward_side_by_side_on_two_threads(backend, need):
    """With two threads the native backward runs its independent GEMMs side by side; with
    one, in turn: every gradient asked for (and only those) matches the reference either
    way, also when the block is larger than a chunk of the middle convolution."""
    before = torch.get_num_threads()
    x = torch.randn(4, 16, 9, 11, dtype=torch.float64)
    ps = params(c=16, c2=8, dtype=torch.float64)
    names = ["x", "w1", "b1", "w2", "b2", "w3", "b3"]
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            leaves = [t.clone().requires_grad_(need in ("all", n)) for n, t in
                      zip(names, [x, *ps], strict=True)]  # fmt: skip
            out = block(leaves[0], leaves[1:], backend, p=0.25, seed=3)
            out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5),
                                     dtype=out.dtype))  # fmt: skip
            results.append([t.grad for t in leaves])
        leaves = [t.clone().requires_grad_(need in ("all", n)) for n, t in
                  zip(names, [x, *ps], strict=True)]  # fmt: skip
        out = block(leaves[0], leaves[1:], "reference", p=0.25, seed=3)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5),
                                 dtype=out.dtype))  # fmt: skip
        for grads in results:
            for got, want in zip(grads, [t.grad for t in leaves], strict=True):
                assert (got is None) == (want is None)
                if want is not None:
                    torch.testing.assert_close(got, want)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "native"])
@pytest.mark.parametrize("path", ["chunks", "rects"])
@pytest.mark.parametrize("where", ["x", "w2"])
def test_non_finite_values_the_mask_hides_never_leak(backend, path, where, monkeypatch):
    """Whichever CPU path runs the middle convolution (the gather path needs no input
    check, the bounding-box path does), a NaN in the last pixel or in a masked tap of w2
    changes no output that must not read it, and gives no NaN gradient to anything else."""
    monkeypatch.setenv("GM_MASKED_CONV_CPU_PATH", path)
    x = torch.randn(2, 6, 4, 5)
    ps = params()
    clean = block(x, ps, "reference")
    keep = torch.ones(4, 5, dtype=torch.bool)
    if where == "x":
        x[:, :, 3, 4] = float("nan")
        keep[3, 4] = False
    else:
        mask = make_mask(4, 4, 3, "B")
        ps[2] = torch.where(mask.bool(), ps[2], torch.full_like(ps[2], float("nan")))
    x.requires_grad_(True)
    leaves = [t.requires_grad_(True) for t in ps]
    out = block(x, leaves, backend)
    torch.testing.assert_close(out[..., keep], clean[..., keep])
    (out[..., keep].sum()).backward()
    if where == "w2":
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(t.grad).all() for t in leaves[:2] + leaves[3:])
        assert (leaves[2].grad[mask == 0] == 0).all()
    else:
        assert not x.grad[:, :, 3, 4].any() and torch.isfinite(x.grad[..., keep]).all()


def test_recipe_matches_the_op_without_dropout():
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    ps = params(dtype=torch.float64)
    torch.testing.assert_close(
        pixelcnn_residual_block_recipe(x, *ps, 0.0, training=False), block(x, ps, "reference")
    )


# --- PixelCNN uses it --------------------------------------------------------------------


def _uses_fused(model, monkeypatch) -> int:
    import genmodels.nn.pixelcnn_residual_block as module

    calls = []
    real = module.pixelcnn_residual_block
    monkeypatch.setattr(
        module, "pixelcnn_residual_block", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    model(torch.randint(0, model.levels, (2, model.in_channels, 5, 5)))
    return len(calls)


def _layer_by_layer(model, x):
    from genmodels.models._likelihood import to_unit

    h = model.input(to_unit(x, model.levels, model.input.weight.dtype))
    for blk in model.blocks:
        h = h + blk(h)
    return model._logits(model.output(h))


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("train", [False, True])
def test_pixelcnn_blocks_are_fused_and_match_layer_by_layer(in_channels, train, monkeypatch):
    torch.manual_seed(0)
    model = PixelCNN(in_channels=in_channels, image_size=5, hidden_channels=12, num_layers=2)
    model = model.double().train(train)
    assert _uses_fused(model, monkeypatch) == 2
    x = torch.randint(0, 17, (3, in_channels, 5, 5))
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    want = _layer_by_layer(model, x)
    torch.testing.assert_close(out, want)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(1)
    _layer_by_layer(model, x).sum().backward()
    for got, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad)


def _hook(model):
    model.blocks[0][3].register_forward_hook(lambda m, i, o: o * 2)


def _parametrize(model):
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    parametrize.register_parametrization(model.blocks[0][1], "weight", Double())


def _subclass(model):
    class MyConv(MaskedConv2d):
        def forward(self, x):
            return super().forward(x) * 2

    old = model.blocks[0][6]
    new = MyConv(old.in_channels, old.out_channels, 1, "B").double()
    new.load_state_dict(old.state_dict())
    model.blocks[0][6] = new


def _dropout_swap(model):
    model.blocks[0][5] = torch.nn.Dropout(0.2)


@pytest.mark.parametrize("change", [_hook, _parametrize, _subclass, _dropout_swap])
def test_pixelcnn_falls_back_layer_by_layer(change, monkeypatch):
    torch.manual_seed(0)
    model = PixelCNN(image_size=5, hidden_channels=8, num_layers=2).double().eval()
    change(model)
    model.eval()
    assert _uses_fused(model, monkeypatch) == 1  # block 0 runs layer by layer
    x = torch.randint(0, 17, (2, 1, 5, 5))
    torch.testing.assert_close(model(x), _layer_by_layer(model, x))


def test_pixelcnn_state_dict_keys_unchanged_and_old_checkpoints_load():
    model = PixelCNN(hidden_channels=8, num_layers=2)
    keys = set(model.state_dict())
    assert "blocks.0.1.weight" in keys and "blocks.1.6.bias" in keys
    twin = PixelCNN(hidden_channels=8, num_layers=2)
    twin.load_state_dict(model.state_dict())
    assert isinstance(model.blocks[0][5], Dropout)
