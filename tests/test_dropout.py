import math

import pytest
import torch
from conftest import FLOAT_DTYPES, kernel_backends

import genmodels
from genmodels import _backend
from genmodels.ops import dropout
from genmodels.ops._philox import (
    draw_seed,
    dropout_dropped,
    dropout_threshold,
    philox4x32_10,
    philox_groups,
    seed_words,
)
from genmodels.ops.dropout import dropout_scale

BACKENDS = kernel_backends("cpu")
SHAPES = [(7,), (5, 13), (3, 1, 17), (2, 3, 5, 7), (1, 1031), (4, 3, 29, 31)]


def seeded(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def drawn_words(seed=0):
    """The (seed, offset) that dropout draws from seeded(seed)."""
    return seed_words(draw_seed(seeded(seed)))


def skip_unsupported(backend, dtype):
    if backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter truncates float32 to bfloat16 (GPUs round to nearest)")


def reference(x, p=0.5, seed=0):
    return dropout(x, p, generator=seeded(seed), backend="reference")


# --- the mask definition ----------------------------------------------------------------


def test_mask_is_the_philox_word_of_each_element():
    # Element i: word i % 4 of Philox4x32-10 at counter (i // 4, offset), key seed; dropped
    # iff word >> 8 < round(p * 2^24). High seed, offset and counter words included.
    seed, offset = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    idx = torch.tensor([0, 1, 2, 3, 4, 7, 1029, 2**34 + 6])
    threshold = dropout_threshold(0.3)
    got = dropout_dropped(seed, offset, idx, threshold)
    for i, dropped in zip(idx.tolist(), got.tolist(), strict=True):
        g = i // 4
        counter = (g & 0xFFFFFFFF, g >> 32, offset & 0xFFFFFFFF, offset >> 32)
        words = philox4x32_10(*(torch.tensor([c]) for c in counter), seed & 0xFFFFFFFF, seed >> 32)
        assert dropped == ((words[i % 4].item() >> 8) < threshold), i


def test_threshold_rounds_half_to_even():
    assert dropout_threshold(0.5) == 2**23
    assert dropout_threshold(2.5 / 2**24) == 2 and dropout_threshold(3.5 / 2**24) == 4
    assert dropout_threshold(0.0) == 0 and dropout_threshold(1.0) == 2**24


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_mask_statistics(p):
    n = 1 << 20
    s, o = drawn_words(3)
    dropped = dropout_dropped(s, o, torch.arange(n), dropout_threshold(p)).double()
    # Expected drop rate threshold / 2^24, within five standard errors.
    se = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.mean().item() - dropout_threshold(p) / 2**24) < 5 * se
    # No correlation between neighbours, within a counter group and across groups.
    d = dropped - dropped.mean()
    for lag in (1, 2, 3, 4, 5, 8):
        corr = (d[:-lag] * d[lag:]).mean().item() / (p * (1 - p))
        assert abs(corr) < 5 / math.sqrt(n), lag


# --- every backend against the reference ------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_backward_match_reference_bit_for_bit(backend, dtype, shape):
    skip_unsupported(backend, dtype)
    x = torch.randn(shape, generator=seeded(1)).to(dtype)
    grad = torch.randn(shape, generator=seeded(2)).to(dtype)
    results = {}
    for name in ("reference", backend):
        xi = x.clone().requires_grad_()
        out = dropout(xi, 0.3, generator=seeded(7), backend=name)
        out.backward(grad)
        results[name] = (out, xi.grad)
    for got, want in zip(results[backend], results["reference"], strict=True):
        assert got.dtype == dtype and got.shape == x.shape
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_same_seed_same_mask_on_every_backend_and_backward_reuses_it(backend):
    # x of ones: the output is the mask times 1 / (1 - p); the gradient of a random
    # grad_out must be grad_out times the same mask.
    p = 0.37
    s, o = drawn_words(5)
    shape = (3, 5, 11, 13)
    expected = ~dropout_dropped(s, o, torch.arange(math.prod(shape)), dropout_threshold(p))
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    out = dropout(x, p, generator=seeded(5), backend=backend)
    assert torch.equal(out != 0, expected.view(shape))
    assert torch.equal(out[out != 0], torch.full_like(out[out != 0], dropout_scale(p)))
    grad = torch.randn(shape, dtype=torch.float64, generator=seeded(1))
    out.backward(grad)
    assert torch.equal(x.grad, grad * out)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_threshold_ties_round_to_even_on_every_backend(backend):
    # Pick an element whose word >> 8 is an even T, and set p * 2^24 = T + 0.5: it is kept
    # when the threshold rounds to T (half to even) and dropped if it rounded up to T + 1.
    s, o = drawn_words(9)
    idx = torch.arange(64)
    words = torch.stack(philox_groups(s, o, idx >> 2)).gather(0, (idx & 3)[None])[0]
    t = words >> 8
    i = int(torch.nonzero(t % 2 == 0)[0])
    p = (t[i].item() + 0.5) / 2**24
    out = dropout(torch.ones(64), p, generator=seeded(9), backend=backend)
    assert out[i] != 0
    assert torch.equal(out, reference(torch.ones(64), p, seed=9))


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_channels_last_keeps_its_layout_and_the_mask_follows_memory(backend):
    x = torch.randn(4, 6, 5, 7, generator=seeded(1)).to(memory_format=torch.channels_last)
    out = dropout(x, 0.4, generator=seeded(3), backend=backend)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # The same storage read as a contiguous NHWC tensor gets the same mask, element for element.
    nhwc = x.permute(0, 2, 3, 1)
    assert nhwc.is_contiguous()
    assert torch.equal(out.permute(0, 2, 3, 1), reference(nhwc, 0.4, seed=3))
    assert torch.equal(out, reference(x, 0.4, seed=3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_transposed_input_walks_its_storage(backend):
    base = torch.randn(9, 14, generator=seeded(2))
    out = dropout(base.t(), 0.5, generator=seeded(4), backend=backend)
    assert out.stride() == base.t().stride()
    assert torch.equal(out.t(), reference(base, 0.5, seed=4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_dense_input_is_made_contiguous_first(backend):
    wide = torch.randn(5, 22, generator=seeded(2), requires_grad=True)
    sliced = wide[:, ::2]
    assert not sliced.is_contiguous()
    out = dropout(sliced, 0.5, generator=seeded(4), backend=backend)
    assert torch.equal(out, reference(sliced.detach().contiguous(), 0.5, seed=4))
    out.sum().backward()
    assert torch.equal(wide.grad[:, ::2], (out != 0).float() * 2.0)
    assert torch.equal(wide.grad[:, 1::2], torch.zeros(5, 11))


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_gradient_in_another_layout_meets_the_same_mask(backend):
    # The output is channels_last; a contiguous (or expanded) grad_out must still be
    # multiplied by the mask of its own element, not of the same storage position.
    x = torch.ones(2, 3, 4, 5).to(memory_format=torch.channels_last).requires_grad_()
    out = dropout(x, 0.5, generator=seeded(6), backend=backend)
    grad = torch.randn(2, 3, 4, 5, generator=seeded(1))
    assert grad.is_contiguous() and not out.is_contiguous()
    (gx,) = torch.autograd.grad(out, x, grad, retain_graph=True)
    assert torch.equal(gx, grad * out)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(gx, out.detach())


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_keep_fraction(backend, p):
    n = 1 << (17 if backend == "triton" else 20)  # the interpreter takes 10 s for 2^20
    out = dropout(torch.ones(n), p, generator=seeded(11), backend=backend)
    kept = (out != 0).double().mean().item()
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(out.double().mean().item(), 1.0, rtol=0, atol=0.01)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_non_finite_inputs_propagate_like_the_formula(backend):
    # out = x * keep / (1 - p): a dropped NaN or inf stays NaN (inf * 0), as in torch.
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0] * 64)
    out = dropout(x, 0.5, generator=seeded(1), backend=backend)
    kept = dropout(torch.ones_like(x), 0.5, generator=seeded(1), backend=backend) != 0
    assert kept[1::4].any() and not kept[1::4].all()
    torch.testing.assert_close(out, torch.where(kept, x * 2, x * 0), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_zero_size(backend):
    for shape in [(0,), (3, 0, 5), (0, 4, 2, 2)]:
        x = torch.randn(shape, requires_grad=True)
        out = dropout(x, 0.5, backend=backend)
        assert out.shape == x.shape
        out.sum().backward()
        assert x.grad.shape == x.shape
    if backend != "reference":
        seed = torch.tensor([1, 2])
        assert torch.ops.genmodels.dropout(torch.randn(0, 3), seed, 0.5, backend).shape == (0, 3)


# --- autograd, torch.library and torch.compile ------------------------------------------


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_gradcheck_and_gradgradcheck_float64(backend):
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=seeded(0), requires_grad=True)

    def fn(t):
        return dropout(t, 0.4, generator=seeded(1), backend=backend)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    cl = torch.randn(1, 3, 2, 4, dtype=torch.float64).to(memory_format=torch.channels_last)
    assert torch.autograd.gradgradcheck(fn, (cl.requires_grad_(),))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    seed = torch.tensor([123, -456], dtype=torch.int64)
    x = torch.randn(4, 6, generator=seeded(0), requires_grad=True)
    torch.library.opcheck(torch.ops.genmodels.dropout.default, (x, seed, 0.3, backend))
    cl = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.genmodels.dropout.default, (cl, seed, 0.5, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_of_the_size_of_x_is_saved_for_backward(backend):
    x = torch.randn(16, 64, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = dropout(x, 0.5, backend=backend)
    for t in saved:
        assert t.numel() <= 2, f"saved a tensor of shape {tuple(t.shape)}"
    out.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    x = torch.randn(4, 8, 3, 3, generator=seeded(0)).to(memory_format=torch.channels_last)

    def step(t):
        return (dropout(t, 0.25, backend=backend) * t).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        torch.manual_seed(3)
        xi = x.clone().requires_grad_()
        loss = fn(xi)
        loss.backward()
        results.append((loss, xi.grad))
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


# Inductor makes its own random draws (the seed is one) unless told to fall back to
# eager's. config.patch, not monkeypatch: monkeypatch finds no old value on torch's config
# module and deletes the option when it undoes, which breaks every later compile.
@torch._inductor.config.patch(fallback_random=True)
def test_compile_inductor_matches_eager():
    if not _backend.native_available("cpu")[0]:
        pytest.skip("genmodels._C is not built")
    torch._dynamo.reset()
    x = torch.randn(8, 16, generator=seeded(0), requires_grad=True)

    def step(t):
        return (dropout(t, 0.5) ** 2).sum()

    torch.manual_seed(4)
    want = step(x)
    (want_grad,) = torch.autograd.grad(want, x)
    torch.manual_seed(4)
    got = torch.compile(step, fullgraph=True)(x)
    (got_grad,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


# --- the public function and module ------------------------------------------------------


def test_manual_seed_reproduces_and_calls_differ():
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_identity_and_zeros(backend):
    x = torch.randn(3, 4, requires_grad=True)
    assert dropout(x, 0.5, training=False, backend=backend) is x
    assert dropout(x, 0.0, backend=backend) is x
    out = dropout(x, 1.0, backend=backend)
    assert torch.equal(out, torch.zeros(3, 4))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros(3, 4))
    state = torch.random.get_rng_state()
    dropout(x, 0.5, training=False, backend=backend)
    assert torch.equal(torch.random.get_rng_state(), state), "eval drew a seed"


def test_module_is_a_drop_in_torch_dropout():
    ours, theirs = genmodels.nn.Dropout(0.3), torch.nn.Dropout(0.3)
    assert isinstance(ours, torch.nn.Dropout)
    assert repr(ours) == repr(theirs) == "Dropout(p=0.3, inplace=False)"
    assert ours.state_dict() == theirs.state_dict() == {}
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 10)
    out = ours(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert ((out == 0) | torch.isclose(out, x / 0.7)).all() and (out == 0).any()
    ours.eval()
    assert ours(x) is x
    ours.train()
    ours.p = 0.0
    assert ours(x) is x


def test_module_calls_the_op_with_its_p_mode_and_backend(monkeypatch):
    import sys

    calls = []
    module = sys.modules["genmodels.nn.dropout"]
    monkeypatch.setattr(module, "dropout", lambda x, p, **kw: calls.append((p, kw)) or x)
    layer = genmodels.nn.Dropout(0.25, backend="reference")
    layer(torch.randn(3))
    layer.eval()(torch.randn(3))
    assert calls == [
        (0.25, dict(training=True, backend="reference")),
        (0.25, dict(training=False, backend="reference")),
    ]


def test_module_draws_the_op_mask():
    x = torch.randn(5, 7)
    torch.manual_seed(2)
    got = genmodels.nn.Dropout(0.5)(x)
    torch.manual_seed(2)
    assert torch.equal(got, dropout(x, 0.5, backend="reference"))


def test_module_arguments():
    with pytest.raises(ValueError, match="inplace"):
        genmodels.nn.Dropout(0.5, inplace=True)
    with pytest.raises(ValueError, match="between 0 and 1"):
        genmodels.nn.Dropout(1.5)
    with pytest.raises(ValueError, match="backend"):
        genmodels.nn.Dropout(0.5, backend="fast")


def test_pixelcnn_models_use_it():
    from genmodels.models import GatedPixelCNN, PixelCNN

    for model_class, p in ((PixelCNN, 0.2), (GatedPixelCNN, 0.3)):
        model = model_class(dropout=p, backend="reference")
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(layers) == len(model.blocks if model_class is PixelCNN else model.layers)
        for m in layers:
            assert isinstance(m, genmodels.nn.Dropout) and m.p == p and m.backend == "reference"


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda x: dropout(x, 1.5), ValueError, "p must be in"),
        (lambda x: dropout(x, -0.1), ValueError, "p must be in"),
        (lambda x: dropout(x, float("nan")), ValueError, "p must be finite"),
        (lambda x: dropout(x, "0.5"), TypeError, "p must be a real"),
        (lambda x: dropout(x, True), TypeError, "p must be a real"),
        (lambda x: dropout(x.long()), RuntimeError, "x must be"),
        (lambda x: dropout(x.cfloat()), RuntimeError, "x must be"),
        (lambda x: dropout([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
        (lambda x: dropout(x, training=1), TypeError, "training"),
        (lambda x: dropout(x, generator=3), TypeError, "generator"),
        (lambda x: dropout(x.to("meta"), generator=seeded()), RuntimeError, "generator"),
        (lambda x: dropout(x, backend="cuda"), ValueError, "backend"),
        (lambda x: dropout(x, training=False, backend="cuda"), ValueError, "backend"),
    ],
)
def test_bad_arguments_name_the_argument(call, error, words):
    x = torch.randn(4, 6)
    with pytest.raises(error, match=words):
        call(x)


def test_cpp_entry_points_check_their_arguments():
    if not _native():
        pytest.skip(_backend._C_ERROR)
    x = torch.randn(4, 6)
    for entry in (_backend._C.dropout_forward_cpu, _backend._C.dropout_autograd_cpu):
        with pytest.raises(RuntimeError, match="x must be a floating-point"):
            entry(x.long(), 0.5, 0, 0)
        with pytest.raises(RuntimeError, match="p must be a number in"):
            entry(x, 1.5, 0, 0)
        with pytest.raises(RuntimeError, match="p must be a number in"):
            entry(x, float("nan"), 0, 0)
    with pytest.raises(RuntimeError, match="x must be on cpu"):
        _backend._C.dropout_forward_cpu(x.to("meta"), 0.5, 0, 0)


# --- CUDA (skipped without a device) ------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("backend", ["native", "triton"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_cuda_matches_the_cpu_reference(backend, dtype):
    # Both draw their seed from the CPU default generator, so both get the same mask.
    x = torch.randn(3, 8, 17, 19, generator=seeded(1)).to(dtype)
    x = x.to(memory_format=torch.channels_last)
    torch.manual_seed(2)
    want = dropout(x, 0.3, backend="reference")
    xc = x.cuda().requires_grad_()
    torch.manual_seed(2)
    got = dropout(xc, 0.3, backend=backend)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.cpu(), want)
    got.backward(torch.ones_like(got))
    torch.manual_seed(2)
    assert torch.equal(xc.grad.cpu(), dropout(torch.ones_like(x), 0.3, backend="reference"))
    first = dropout(xc, 0.3, generator=seeded(4, "cuda"), backend=backend)
    assert torch.equal(first, dropout(xc, 0.3, generator=seeded(4, "cuda"), backend=backend))


def _native():
    return _backend.native_available("cpu")[0]
