"""Cached incremental sampling (model.sample(method="cached")) against the naive sampler."""

import gc
import weakref

import pytest
import torch
from torch import nn

from genmodels import _backend
from genmodels.models import GatedPixelCNN, PixelCNN, _sampling
from genmodels.ops import pixelcnn_sampling

MODELS = [PixelCNN, GatedPixelCNN]
BACKENDS = ["native", "reference"]
needs_native = pytest.mark.skipif(_backend._C is None, reason="genmodels._C is not built")


def backend_param(backend):
    return pytest.param(backend, marks=needs_native) if backend == "native" else backend


def make(model_class, *, channels=1, size=5, levels=4, classes=None, dtype=torch.float64,
         seed=0, **kw):  # fmt: skip
    torch.manual_seed(seed)
    model = model_class(in_channels=channels, image_size=size, levels=levels, hidden_channels=12,
                        num_layers=3, num_classes=classes, **kw)  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():  # class tables start at zero: give everything weight
            p.copy_(torch.randn_like(p) * 0.4)
    return model.eval().to(dtype)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def check_exact(model, n, y=None, backend="native", seeds=(1, 2)):
    """cached == naive for each seed; the recorded logits == the model's on the images."""
    for seed in seeds:
        naive = model.sample(n, y=y, generator=generator(seed), method="naive")
        with torch.no_grad():
            x, logits = _sampling.cached(model, n, y, generator(seed), backend=backend,
                                         record=True)  # fmt: skip
            want = model(naive, y if model.num_classes is None else _labels(model, n, y))
        assert torch.equal(x, naive), f"seed {seed}: the images differ"
        if model.output[1].weight.dtype == torch.float64:
            torch.testing.assert_close(logits, want, rtol=0, atol=1e-10)
        else:
            torch.testing.assert_close(logits, want, rtol=0, atol=1e-4)


def _labels(model, n, y):
    return torch.arange(n) % model.num_classes if y is None else y


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("classes", [None, 3])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_cached_draws_the_naive_samples(model_class, channels, classes, dtype, backend):
    model = make(model_class, channels=channels, classes=classes, dtype=dtype)
    y = None if classes is None else torch.tensor([2, 0, 1, 1, 2])
    check_exact(model, 5, y, backend)


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_gated_kernel_sizes(kernel_size, channels, backend):
    model = make(GatedPixelCNN, channels=channels, kernel_size=kernel_size, size=6)
    check_exact(model, 3, backend=backend, seeds=(3,))


@needs_native
@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_small_and_odd_images_and_batches(model_class, size):
    # Images smaller than the 7x7 input kernel, batches that are not a multiple of the
    # kernels' 4-image tiles, two levels (binarized) and many.
    for n, levels in ((1, 2), (6, 17)):
        model = make(model_class, size=size, levels=levels)
        check_exact(model, n, seeds=(4,))


@needs_native
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_float32_many_seeds_and_two_threads(model_class):
    model = make(model_class, channels=3, size=4, levels=8, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        check_exact(model, 9, seeds=range(5, 10))
    finally:
        torch.set_num_threads(threads)


@needs_native
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_default_method_and_default_generator(model_class):
    model = make(model_class, size=4, classes=2)
    torch.manual_seed(7)
    naive = model.sample(4, method="naive")
    torch.manual_seed(7)
    assert torch.equal(model.sample(4), naive)  # cached is the default
    y = torch.tensor([1, 1, 0, 1])
    assert torch.equal(
        model.sample(4, y=y, generator=generator(8)),
        model.sample(4, y=y, generator=generator(8), method="naive"),
    )


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_caches_are_freed(model_class, backend, monkeypatch):
    model = make(model_class, size=4)
    attributes = set(vars(model))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    refs = []
    new_workspace = pixelcnn_sampling.new_workspace

    def tracked(*args):
        ws = new_workspace(*args)
        refs.append(weakref.ref(ws))
        return ws

    monkeypatch.setattr(pixelcnn_sampling, "new_workspace", tracked)
    model.sample(3, generator=generator(0), backend=backend)
    gc.collect()
    if backend == "native":
        assert len(refs) == 1 and refs[0]() is None
    assert not [o for o in gc.get_objects() if type(o) is _sampling.SamplingCaches]
    assert set(vars(model)) == attributes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@needs_native
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_cache_memory_is_reported(model_class):
    model = make(model_class, size=8, dtype=torch.float32)
    small = pixelcnn_sampling.cache_bytes(model, 4)
    assert 0 < small < pixelcnn_sampling.cache_bytes(model, 8)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_what_the_cached_sampler_does_not_model_goes_naive(model_class):
    model = make(model_class, size=3)
    want = model.sample(2, generator=generator(0), method="naive")
    handle = model.output[1].register_forward_hook(lambda m, i, o: o * 2)
    with pytest.warns(RuntimeWarning, match="forward hooks"):
        got = model.sample(2, generator=generator(0))
    assert torch.equal(got, model.sample(2, generator=generator(0), method="naive"))
    handle.remove()
    assert torch.equal(model.sample(2, generator=generator(0)), want)

    class Sub(model_class):
        pass

    sub = make(Sub, size=3)
    with pytest.warns(RuntimeWarning, match="is not PixelCNN or GatedPixelCNN"):
        sub.sample(1)
    model.train()
    with pytest.warns(RuntimeWarning, match="dropout is active"):
        model.sample(1)
    nn.utils.parametrizations.weight_norm(model.output[3])
    model.eval()
    with pytest.warns(RuntimeWarning, match="parametrized"):
        model.sample(1)
    half = make(model_class, size=3).to(torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="float32 and float64"):
        half.sample(1)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_bad_arguments(model_class):
    model = make(model_class, size=3, classes=3)
    with pytest.raises(ValueError, match="method"):
        model.sample(2, method="fast")
    with pytest.raises(ValueError, match="n must be"):
        model.sample(-1)
    with pytest.raises(ValueError, match="y must be"):
        model.sample(2, y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="y must hold classes"):
        model.sample(2, y=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="not class-conditional"):
        make(model_class, size=3).sample(2, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="backend"):
        model.sample(2, backend="fastest")
    assert model.sample(0).shape == (0, 1, 3, 3)


@needs_native
def test_native_sampler_refuses_autograd_and_bad_packing():
    model = make(PixelCNN, size=3)
    with pytest.raises(RuntimeError, match="inference-only"):
        pixelcnn_sampling.sample(model, 2, None, None)
    name, convs = pixelcnn_sampling.model_convs(model)
    packed = [pixelcnn_sampling.pack_conv(conv, g) for conv, g in convs]
    weights, biases, metas = (list(t) for t in zip(*packed, strict=True))
    x = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    ws = torch.zeros(pixelcnn_sampling.workspace_elements(model, 2), dtype=torch.float64)
    call = _backend._C.pixelcnn_sampling_sample_cpu
    with pytest.raises(RuntimeError, match="workspace must hold"):
        call(name, x, None, ws[:10], weights, biases, metas, None, 4, None)
    bad = metas[:]
    bad[0] = bad[0].clone()
    bad[0][8] = 6  # a tap row below the center
    with pytest.raises(RuntimeError, match="causal half"):
        call(name, x, None, ws, weights, biases, bad, None, 4, None)
    with pytest.raises(RuntimeError, match=r"weights\[1\]"):
        call(name, x, None, ws, [weights[0], weights[0]] + weights[2:], biases, metas, None, 4,
             None)  # fmt: skip
    with pytest.raises(RuntimeError, match="cond"):
        call(name, x, None, ws, weights, biases, metas, torch.zeros(2, 5, dtype=torch.float64),
             4, None)  # fmt: skip


@pytest.mark.skipif(not _backend.triton_available("cpu")[0], reason="needs TRITON_INTERPRET=1")
@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_triton_position_kernel(model_class):
    # The per-layer path of GPU tensors, its Triton kernel run by the interpreter.
    for dtype in (torch.float64, torch.float32):
        model = make(model_class, channels=3, size=2, classes=2, dtype=dtype)
        check_exact(model, 2, torch.tensor([1, 0]), backend="triton", seeds=(0,))
