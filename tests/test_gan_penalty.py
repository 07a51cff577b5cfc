"""genmodels.gan.gradient_penalty against the canonical recipes, and its methods."""

import pytest
import torch
import torch.nn.functional as F
from conftest import kernel_backends
from torch import nn

from genmodels.gan import gradient_penalty
from genmodels.nn import GradientPenalty

KINDS = ["wgan-gp", "dragan", "dragan-uniform", "r1", "r2"]


class Critic(nn.Module):
    """A small DCGAN-shaped critic: strided 4x4 convolutions, then one score per sample."""

    def __init__(self, size=8, channels=2, width=4, act=None, num_classes=0):
        super().__init__()
        self.act = act or (lambda t: F.leaky_relu(t, 0.2))
        self.c1 = nn.Conv2d(channels, width, 4, 2, 1)
        self.c2 = nn.Conv2d(width, 2 * width, 4, 2, 1)
        self.out = nn.Conv2d(2 * width, 1, size // 4)
        self.embed = nn.Embedding(num_classes, 2 * width) if num_classes else None

    def forward(self, x, y=None, *, shift=0.0):
        h = self.act(self.c2(self.act(self.c1(x))))
        if self.embed is not None:
            h = h * self.embed(y)[:, :, None, None]
        return self.out(h).flatten() + shift


def _data(dtype, batch=5, size=8, channels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(batch, channels, size, size, generator=g, dtype=dtype) * 2 - 1
    fake = torch.tanh(torch.randn(batch, channels, size, size, generator=g, dtype=dtype))
    alpha = torch.rand(batch, generator=g, dtype=dtype)
    noise = 0.3 * torch.randn(batch, channels, size, size, generator=g, dtype=dtype)
    return real, fake, alpha, noise


def _param_grads(D, loss):
    return torch.autograd.grad(loss, list(D.parameters()), materialize_grads=True)


def _canonical(D, real, fake, kind, alpha, noise, weight, seed):
    """The recipes as users write them: points, autograd.grad(create_graph=True), flatten
    per sample, norm, (norm - 1)**2 (or norm**2 for R1/R2), mean, times lambda."""
    if kind == "wgan-gp":
        a = alpha.view(-1, 1, 1, 1)
        x = a * real + (1 - a) * fake
    elif kind == "dragan":
        x = real + noise
    elif kind == "dragan-uniform":
        u = torch.rand(real.shape, generator=torch.Generator().manual_seed(seed), dtype=real.dtype)
        x = real + alpha.view(-1, 1, 1, 1) * 0.5 * real.std() * u
    else:
        x = real if kind == "r1" else fake
    x = x.detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), create_graph=True)
    norm = g.view(g.size(0), -1).norm(2, dim=1)
    if kind in ("r1", "r2"):
        return weight / 2 * g.pow(2).view(g.size(0), -1).sum(1).mean()
    return weight * ((norm - 1) ** 2).mean()


def _ours(D, real, fake, kind, alpha, noise, weight, seed, **kw):
    args = dict(weight=weight)
    if kind == "wgan-gp":
        args.update(alpha=alpha)
    elif kind == "dragan":
        args.update(noise=noise)
    elif kind == "dragan-uniform":
        args.update(alpha=alpha, dragan_noise="uniform")
        args.update(generator=torch.Generator().manual_seed(seed))
    base = "dragan" if kind.startswith("dragan") else kind
    return gradient_penalty(D, real, fake, kind=base, **args, **kw)


@pytest.mark.parametrize("backend", [*kernel_backends(), "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_canonical_recipe(kind, backend):
    torch.manual_seed(0)
    D = Critic().double()
    real, fake, alpha, noise = _data(torch.float64)
    want = _canonical(D, real, fake, kind, alpha, noise, 10.0, seed=7)
    got = _ours(D, real, fake, kind, alpha, noise, 10.0, seed=7, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for g, w in zip(_param_grads(D, got), _param_grads(D, want), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("method", ["autograd", "finite-difference"])
@pytest.mark.parametrize("kind", ["wgan-gp", "dragan", "r1", "r2"])
def test_linear_critic_is_exact(kind, method):
    torch.manual_seed(1)
    w = torch.randn(2 * 4 * 4, dtype=torch.float64, requires_grad=True)
    D = lambda x: x.flatten(1) @ w  # noqa: E731
    real, fake, alpha, noise = _data(torch.float64, size=4)
    kw = dict(alpha=alpha) if kind == "wgan-gp" else dict(noise=noise) if kind == "dragan" else {}
    got = gradient_penalty(D, real, fake, kind=kind, weight=3.0, target=0.5, method=method, **kw)
    (grad_w,) = torch.autograd.grad(got, w)
    n = w.detach().norm()
    if kind in ("r1", "r2"):
        value, dvalue = 1.5 * n**2, 3.0 * w.detach()
    else:
        value, dvalue = 3.0 * (n - 0.5) ** 2, 6.0 * (n - 0.5) * w.detach() / n
    torch.testing.assert_close(got, value, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_w, dvalue, rtol=1e-7, atol=1e-9)


def _flat(grads):
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("kind", ["wgan-gp", "dragan", "r1", "r2"])
@pytest.mark.parametrize("seed", range(4))
def test_finite_difference_matches_autograd_on_smooth_critic(kind, seed):
    torch.manual_seed(100 + seed)
    D = Critic(size=16, channels=3, width=16, act=F.elu)
    real, fake, alpha, noise = _data(torch.float32, batch=8, size=16, channels=3, seed=seed)
    kw = dict(alpha=alpha) if kind == "wgan-gp" else dict(noise=noise) if kind == "dragan" else {}
    exact = gradient_penalty(D, real, fake, kind=kind, **kw)
    approx = gradient_penalty(D, real, fake, kind=kind, method="finite-difference", **kw)
    assert approx.item() == exact.item()  # the same value, computed from the same gradient
    g_exact, g_fd = _flat(_param_grads(D, exact)), _flat(_param_grads(D, approx))
    assert ((g_fd - g_exact).norm() / g_exact.norm()).item() < 1e-2


class _OnceDifferentiableELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.elu(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 0, torch.ones_like(x), torch.exp(x))


def test_once_differentiable_critic():
    torch.manual_seed(2)
    D = Critic(size=16, channels=3, width=8, act=_OnceDifferentiableELU.apply)
    real, fake, alpha, _ = _data(torch.float32, batch=6, size=16, channels=3)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        gradient_penalty(D, real, fake, alpha=alpha).backward()
    approx = gradient_penalty(D, real, fake, alpha=alpha, method="finite-difference")
    g_fd = _flat(_param_grads(D, approx))
    D.act = F.elu  # the same critic with a twice-differentiable ELU
    exact = gradient_penalty(D, real, fake, alpha=alpha)
    g_exact = _flat(_param_grads(D, exact))
    torch.testing.assert_close(approx, exact, rtol=1e-6, atol=0)
    assert ((g_fd - g_exact).norm() / g_exact.norm()).item() < 1e-2


@pytest.mark.parametrize("method", ["autograd", "finite-difference"])
def test_conditional_critic(method):
    torch.manual_seed(3)
    D = Critic(size=8, channels=2, width=8, act=F.elu, num_classes=3).double()
    real, fake, alpha, _ = _data(torch.float64, batch=6)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    # float64: a small step leaves only the O(h) error of ELU's kinked second derivative
    got = gradient_penalty(
        D, real, fake, alpha=alpha, method=method, critic_args=(y,), critic_kwargs={"shift": 1.0},
        fd_step=1e-6,
    )  # fmt: skip
    want = _canonical(lambda x: D(x, y, shift=1.0), real, fake, "wgan-gp", alpha, None, 10.0, 0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    g, w = _flat(_param_grads(D, got)), _flat(_param_grads(D, want))
    assert ((g - w).norm() / w.norm()).item() < (1e-10 if method == "autograd" else 1e-4)


def test_lazy_regularization_module():
    torch.manual_seed(4)
    D = Critic().double()
    real, fake, alpha, _ = _data(torch.float64)
    every = GradientPenalty(every=3)
    plain = gradient_penalty(D, real, fake, alpha=alpha)
    values = [every(D, real, fake, alpha=alpha) for _ in range(7)]
    for i, v in enumerate(values):
        if i % 3 == 0:
            torch.testing.assert_close(v, 3 * plain, rtol=1e-12, atol=0)
            assert v.requires_grad
        else:
            assert v.item() == 0 and not v.requires_grad
    state = every.state_dict()
    resumed = GradientPenalty(every=3)
    resumed.load_state_dict(state)
    assert resumed.calls == 7
    assert resumed(D, real, fake, alpha=alpha).item() == 0  # call 7: skipped, like call 8 would
    with pytest.raises(TypeError, match="iteration"):
        gradient_penalty(D, real, fake, every=2)
    assert gradient_penalty(D, real, fake, every=2, iteration=1).item() == 0


def test_module_matches_function_and_passes_critic_arguments():
    torch.manual_seed(5)
    D = Critic(num_classes=3).double()
    real, fake, alpha, _ = _data(torch.float64, batch=3)
    y = torch.tensor([2, 0, 1])
    module = GradientPenalty(kind="wgan-gp", weight=2.0, target=0.5)
    got = module(D, real, fake, y, alpha=alpha, shift=2.0)
    want = gradient_penalty(
        D, real, fake, weight=2.0, target=0.5, alpha=alpha, critic_args=(y,),
        critic_kwargs={"shift": 2.0},
    )  # fmt: skip
    assert got.item() == want.item()


def _bad(**kw):
    real, fake, alpha, _ = _data(torch.float32)
    D = Critic()
    args = dict(D=D, real=real, fake=fake)
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(fake=torch.zeros(5, 2, 8, 9)), RuntimeError, "fake must have shape"),
        (dict(fake=torch.zeros(5, 2, 8, 8, dtype=torch.float64)), RuntimeError, "fake has dtype"),
        (dict(fake=None), ValueError, "needs fake"),
        (dict(alpha=torch.rand(5, 1)), RuntimeError, r"alpha must have shape \[B\] = \[5\]"),
        (dict(alpha=torch.rand(4)), RuntimeError, "alpha must have shape"),
        (dict(kind="wgan"), ValueError, "kind must be one of"),
        (dict(method="fd"), ValueError, "method must be one of"),
        (dict(D=lambda x: x.flatten(1)), RuntimeError, "D must return one score per sample"),
        (dict(D=lambda x: x.sum()), RuntimeError, "D must return one score per sample"),
        (dict(D=lambda x: (x.sum(),)), TypeError, "D must return a tensor"),
        (dict(D="critic"), TypeError, "D must be callable"),
        (dict(real=torch.zeros(5, 2, 8, 8, dtype=torch.int64)), RuntimeError, "real must be"),
        (dict(kind="dragan", noise=torch.zeros(5, 2)), RuntimeError, "noise must have shape"),
        (dict(noise=torch.zeros(5, 2, 8, 8)), ValueError, "noise applies to kind='dragan'"),
        (dict(weight="ten"), TypeError, "weight must be a real number"),
        (dict(every=0), ValueError, "every must be at least 1"),
        (dict(fd_step=0.0), ValueError, "fd_step must be positive"),
        (dict(dragan_noise="laplace", kind="dragan"), ValueError, "dragan_noise must be one of"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = _bad(**kwargs)
    with pytest.raises(error, match=match):
        gradient_penalty(**args)


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="kind must be one of"):
        GradientPenalty(kind="r3")
    with pytest.raises(ValueError, match="method must be one of"):
        GradientPenalty(method="jvp")
    with pytest.raises(TypeError, match="every must be an int"):
        GradientPenalty(every=2.0)


# --- DistributedDataParallel: 2 gloo processes on CPU ----------------------------------


def ddp_setup():
    torch.manual_seed(11)
    D = Critic(size=8, channels=2, width=4, act=F.elu).double()
    real, fake, alpha, _ = _data(torch.float64, batch=8, seed=11)
    return D, real, fake, alpha


def critic_step_grads(module, D, real, fake, alpha, method):
    """One WGAN-GP critic step's parameter gradients (critic loss + penalty)."""
    loss = module(fake).mean() - module(real).mean()
    loss = loss + gradient_penalty(module, real, fake, alpha=alpha, method=method)
    loss.backward()
    return [p.grad.clone() for p in D.parameters()]


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["autograd", "finite-difference"])
def test_ddp_matches_single_process(method, tmp_path):
    import os
    import subprocess
    import sys

    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ddp_gan_worker.py")
    port = str(_free_port())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(r), "2", port, str(outs[r]), method],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=120)[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    D, real, fake, alpha = ddp_setup()
    want = critic_step_grads(D, D, real, fake, alpha, method)
    for out in outs:
        got = torch.load(out, weights_only=True)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


# --- mixed precision ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["autograd", "finite-difference"])
def test_autocast_grad_scaler_rescues_underflow(method):
    """A critic whose input gradients underflow in float16: the scaler rescues them."""
    torch.manual_seed(12)
    D = Critic(size=16, channels=3, width=16, act=F.elu)
    with torch.no_grad():
        D.out.weight.mul_(3e-6)
    real, fake, alpha, _ = _data(torch.float32, batch=8, size=16, channels=3)
    exact = gradient_penalty(D, real, fake, alpha=alpha, target=0.0)
    with torch.autocast("cpu", dtype=torch.float16):
        unscaled = gradient_penalty(D, real, fake, alpha=alpha, target=0.0, method=method)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14)
        scaled = gradient_penalty(
            D, real, fake, alpha=alpha, target=0.0, method=method, scaler=scaler
        )
    assert abs(unscaled.item() / exact.item() - 1) > 0.5  # float16 underflow without scaling
    assert abs(scaled.item() / exact.item() - 1) < 0.1


@pytest.mark.parametrize("method", ["autograd", "finite-difference"])
def test_autocast_grad_scaler_training_step(method):
    """scaler.scale(loss).backward() + unscale_ gives the float32 parameter gradients."""
    torch.manual_seed(13)
    D = Critic(size=16, channels=3, width=16, act=F.elu)
    real, fake, alpha, _ = _data(torch.float32, batch=8, size=16, channels=3)
    want = _flat(_param_grads(D, gradient_penalty(D, real, fake, alpha=alpha)))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    opt = torch.optim.SGD(D.parameters(), lr=0.0)
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = gradient_penalty(D, real, fake, alpha=alpha, method=method, scaler=scaler)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    got = _flat(p.grad if p.grad is not None else torch.zeros_like(p) for p in D.parameters())
    assert ((got - want).norm() / want.norm()).item() < 2e-2


def test_finite_difference_warns_on_piecewise_linear_critic():
    D = nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.LeakyReLU(0.2), nn.Linear(4, 1))
    real, fake = torch.randn(3, 8), torch.randn(3, 8)
    with pytest.warns(RuntimeWarning, match="biased"):
        gradient_penalty(D, real, fake, method="finite-difference")


@pytest.mark.slow
def test_finite_difference_with_compiled_critic():
    """Compiled modules refuse double backward; the first-order method works with them."""
    torch.manual_seed(14)
    D = Critic(size=8, channels=2, width=4, act=F.elu)
    real, fake, alpha, _ = _data(torch.float32, batch=4)
    compiled = torch.compile(D)
    got = gradient_penalty(compiled, real, fake, alpha=alpha, method="finite-difference")
    want = gradient_penalty(D, real, fake, alpha=alpha, method="finite-difference")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    g, w = _flat(_param_grads(D, got)), _flat(_param_grads(D, want))
    assert ((g - w).norm() / w.norm()).item() < 1e-3
