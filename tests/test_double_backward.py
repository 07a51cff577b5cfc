"""Every backward pass of every op on every backend either is differentiable again
(gradgradcheck in float64) or refuses create_graph=True with a clear error: none returns
gradients that silently carry no graph."""

import pytest
import torch
from conftest import kernel_backends

from genmodels import ops

BACKENDS = [pytest.param("reference", id="reference"), *kernel_backends("cpu")]
# The native CPU masked convolution and gate run as C++ autograd nodes whose backward
# kernels build no graph; they refuse create_graph=True (tested below).
REFUSES = {("masked_conv2d", "native"), ("masked_conv2d_gated", "native"), ("gate", "native")}


def _leaf(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def _case(name):
    """(function of the inputs, inputs) for op `name` on small float64 tensors."""
    if name == "masked_conv2d":
        inputs = (_leaf(1, 2, 3, 4, seed=0), _leaf(4, 2, 3, 3, seed=1), _leaf(4, seed=2))
        return (
            lambda b: (
                lambda x, w, bias: ops.masked_conv2d(
                    x, w, bias, mask_type="A", color_groups=2, backend=b
                )
            ),
            inputs,
        )
    if name == "masked_conv2d_gated":
        inputs = (_leaf(1, 2, 3, 4, seed=0), _leaf(4, 2, 3, 3, seed=1), _leaf(4, seed=2),
                  _leaf(1, 4, 1, 1, seed=3))  # fmt: skip
        return (
            lambda b: (
                lambda x, w, bias, a: ops.masked_conv2d_gated(
                    x, w, bias, a, mask_type="B", color_groups=2, backend=b
                )
            ),
            inputs,
        )
    if name == "gate":
        return lambda b: lambda pre: ops.gate(pre, 2, backend=b), (_leaf(1, 4, 2, 3, seed=0),)
    if name == "reparameterize_kl":
        inputs = (_leaf(3, 5, seed=0), _leaf(3, 5, seed=1))

        def make(b):
            def fn(mu, logvar):
                g = torch.Generator().manual_seed(7)  # the same noise on every call
                return ops.reparameterize_kl(mu, logvar, num_samples=2, generator=g, backend=b)

            return fn

        return make, inputs
    if name == "reparameterize_kl_eps":
        inputs = (_leaf(3, 5, seed=0), _leaf(3, 5, seed=1), _leaf(3, 5, seed=2))
        return (
            lambda b: lambda mu, lv, eps: ops.reparameterize_kl(mu, lv, eps=eps, backend=b),
            inputs,
        )
    if name == "gradient_penalty":
        return lambda b: lambda g: ops.gradient_penalty(g, backend=b), (_leaf(3, 5, seed=0),)
    if name == "dropout":

        def make(b):
            def fn(x):
                return ops.dropout(x, 0.3, generator=torch.Generator().manual_seed(7), backend=b)

            return fn

        return make, (_leaf(3, 5, seed=0),)
    raise AssertionError(name)


OPS = ["masked_conv2d", "masked_conv2d_gated", "gate", "reparameterize_kl",
       "reparameterize_kl_eps", "gradient_penalty", "dropout"]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_double_backward_is_exact_or_refused(name, backend):
    make, inputs = _case(name)
    fn = make(backend)
    op = name.removesuffix("_eps")
    if (op, backend) in REFUSES:
        out = fn(*inputs)
        out = out if isinstance(out, torch.Tensor) else sum(o.sum() for o in out)
        with pytest.raises(RuntimeError, match="create_graph"):
            torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
        return
    assert torch.autograd.gradgradcheck(fn, inputs, atol=1e-7, rtol=1e-5, fast_mode=True)
    # And the first-order gradients carry a graph back to the inputs.
    out = fn(*inputs)
    out = out if isinstance(out, torch.Tensor) else sum(o.square().sum() for o in out)
    grads = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
    assert all(g.requires_grad for g in grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_library_ops_double_backward(backend):
    """The registered autograd of the torch.library ops (what torch.compile traces) is
    differentiable again when called eagerly with create_graph=True."""
    x, w, b = _leaf(1, 2, 3, 4, seed=0), _leaf(4, 2, 3, 3, seed=1), _leaf(4, seed=2)
    if backend == "reference":
        pytest.skip("the reference is plain PyTorch, not a torch.library op")

    def conv(x, w, b):
        return torch.ops.genmodels.masked_conv2d(x, w, b, "B", 2, backend)

    assert torch.autograd.gradgradcheck(conv, (x, w, b), atol=1e-7, rtol=1e-5, fast_mode=True)
    mu, lv = _leaf(3, 4, seed=3), _leaf(3, 4, seed=4)
    seed = torch.tensor([5, 6], dtype=torch.int64)

    def sample(mu, lv):
        return torch.ops.genmodels.reparameterize_kl(mu, lv, None, seed, 2, backend)

    assert torch.autograd.gradgradcheck(sample, (mu, lv), atol=1e-7, rtol=1e-5, fast_mode=True)
