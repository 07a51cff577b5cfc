"""One training step of each model with genmodels kernels against the same architecture
written with plain PyTorch layers (benchmarks/plain_models.py).

Providers:
  genmodels  the genmodels model as `genmodels train` builds it (default sizes, digits 8x8)
  recipe     its plain twin: masked convolutions as plain `nn.Conv2d`s whose weights are
             masked in place before each forward (pytorch-generative's recipe, the
             strongest hand-written one), `nn.Dropout` and an eager gate (PixelCNN, Gated
             PixelCNN), the eager reparameterization and KL (VAE), the canonical WGAN-GP
             penalty (DCGAN)
  product    the PixelCNNs' twin with `F.conv2d(x, weight * mask)` instead (the baseline
             before issue 15), round-robin runs only
  compile    torch.compile of the in-place twin's forward, round-robin runs only
Models: the four defaults on the digits, and `pixelcnn-28x28` (PixelCNN on 28x28 images
with 2 levels, B=16: binarized MNIST's shape).
A step is forward, loss, backward and the Adam update on a batch of 64; for the DCGAN it
is one WGAN-GP iteration: 2 critic steps (each drawing fakes from the generator) and one
generator step, as `genmodels train dcgan` trains; its penalty is
`genmodels.gan.gradient_penalty(method="auto")` (the exact first-order method on this
piecewise-linear critic) against the canonical one with double backward. Same weights and
data for both providers.

    pytest benchmarks/bench_models.py --benchmark-json=benchmarks/results/<name>.json
    python benchmarks/bench_models.py [ROUNDS]   # round-robin medians, robust on a busy machine
    python benchmarks/bench_models.py --pixelcnn [--rounds N] [--threads 1,2] [--contention]
        # the PixelCNN steps (8x8 and 28x28) against the in-place twin, weight*mask twin and
        # torch.compile of the in-place twin; --contention runs them beside one busy core
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from conftest import DEVICE, synchronize  # noqa: E402
from plain_models import plain_twin  # noqa: E402

from genmodels.gan import gradient_penalty  # noqa: E402
from genmodels.models import DCGAN, VAE, GatedPixelCNN, PixelCNN, gan_losses  # noqa: E402

BATCH = 64
N_CRITIC = 2  # the critic steps per generator step of `genmodels train dcgan` (WGAN-GP)
MODELS = ("pixelcnn", "gated-pixelcnn", "vae", "dcgan")
PROVIDERS = ("genmodels", "recipe")


def canonical_penalty(D, real, fake, weight: float = 10.0):
    """The WGAN-GP penalty as Gulrajani et al.'s code and most PyTorch GANs write it."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grads,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return weight * ((grads.view(grads.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()


def _adam(params):
    return torch.optim.Adam(params, lr=1e-4)


def _update(loss, optimizer):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _levels(n: int, size: int = 8, levels: int = 17) -> torch.Tensor:
    return torch.randint(0, levels, (n, 1, size, size), device=DEVICE)


# name: (model class, keyword arguments, batch)
PIXELCNN_28 = (PixelCNN, dict(image_size=28, levels=2), 16)


def make_step(name: str, provider: str, seed: int = 0):
    """A closure running one training step of `name` with `provider`'s layers."""
    torch.manual_seed(seed)
    if name == "dcgan":
        model = DCGAN().to(DEVICE)
        return _gan_step(model, _levels(BATCH), provider)
    if name == "pixelcnn-28x28":
        cls, kwargs, batch = PIXELCNN_28
    else:
        cls, kwargs = {"pixelcnn": PixelCNN, "gated-pixelcnn": GatedPixelCNN, "vae": VAE}[name], {}
        batch = BATCH
    model = cls(**kwargs).to(DEVICE)
    x = _levels(batch, model.image_size, model.levels)
    if provider in ("recipe", "compile"):
        model = plain_twin(model, "inplace")
    elif provider == "product":
        model = plain_twin(model, "product")
    optimizer = _adam(model.parameters())
    if provider == "compile":
        model.forward = torch.compile(model.forward)
    if name == "vae":

        def step():
            _, log_px, kl = model(x)
            _update((kl - log_px).mean(), optimizer)

    else:

        def step():
            _update(F.cross_entropy(model(x), x), optimizer)

    return step


def _gan_step(model: DCGAN, x, provider: str):
    G, D = model.generator, model.discriminator
    opt_g, opt_d = _adam(G.parameters()), _adam(D.parameters())
    real = model.to_unit(x)

    def critic(fake):
        loss = gan_losses.critic_loss("wgan-gp", D(real), D(fake))
        if provider == "genmodels":  # what `genmodels train dcgan` runs
            return loss + gradient_penalty(D, real, fake, method="auto")
        return loss + canonical_penalty(D, real, fake)

    def step():
        for _ in range(N_CRITIC):
            with torch.no_grad():
                fake = G(model.latents(BATCH))
            _update(critic(fake), opt_d)
        _update(gan_losses.generator_loss("wgan-gp", D(G(model.latents(BATCH)))), opt_g)

    return step


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name", MODELS)
def test_training_step(benchmark, name, provider):
    step = make_step(name, provider)

    def run():
        step()
        synchronize()

    benchmark.group = f"{name} training step, digits 8x8, B={BATCH}"
    benchmark.extra_info.update(provider=provider, model=name, batch=BATCH)
    benchmark.pedantic(run, rounds=15, warmup_rounds=3, iterations=1)


def interleaved(
    rounds: int = 30,
    models=MODELS,
    providers=PROVIDERS,
    auto_threads: bool = False,
    chosen: dict | None = None,
) -> list[tuple]:
    """(model, a median in seconds per provider...), timed round-robin. With auto_threads
    each provider's steps run under its own `ThreadChooser("auto")`, as `genmodels train
    --threads auto` runs them, and only steps after its first choice are timed; `chosen`
    then receives {(model, provider): the thread count chosen}."""
    from contextlib import nullcontext

    from genmodels.training.threads import ThreadChooser

    out = []
    for name in models:
        steps = {p: make_step(name, p) for p in providers}
        times: dict[str, list[float]] = {p: [] for p in providers}
        choosers = {p: ThreadChooser("auto", probe_steps=2, every=10**9)
                    for p in providers} if auto_threads else {}  # fmt: skip
        warmup = 3 + max((c.probe_window * len(c.candidates) for c in choosers.values()),
                         default=0)  # fmt: skip
        for i in range(rounds + warmup):
            for p, step in steps.items():
                with choosers[p].step() if auto_threads else nullcontext():
                    start = time.perf_counter()
                    step()
                    synchronize()
                if i >= warmup:  # warm-up (and compilation, and probing) rounds
                    times[p].append(time.perf_counter() - start)
        out.append((name, *(statistics.median(times[p]) for p in providers)))
        if chosen is not None and auto_threads:
            chosen.update({(name, p): c.chosen for p, c in choosers.items()})
    return out


PIXELCNN_PROVIDERS = ("genmodels", "recipe", "product", "compile")


def pixelcnn_main(argv: list[str]) -> None:
    """The PixelCNN steps against the in-place twin (issue 15), 1 and 2 threads."""
    import argparse
    import os
    from contextlib import nullcontext

    from contention import competing_load, load_average, requested

    parser = argparse.ArgumentParser()
    parser.add_argument("--pixelcnn", action="store_true")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", default="1,2", help="counts, and/or auto (ThreadChooser)")
    parser.add_argument("--models", default="pixelcnn,pixelcnn-28x28",
                        help="pixelcnn, pixelcnn-28x28, gated-pixelcnn")  # fmt: skip
    parser.add_argument("--contention", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile provider")
    args = parser.parse_args(argv)
    contended = args.contention or requested()
    providers = PIXELCNN_PROVIDERS[:-1] if args.no_compile else PIXELCNN_PROVIDERS
    print(
        f"device {DEVICE}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
        f"before {load_average()}, competing load on one core: {'yes' if contended else 'no'}"
    )
    print(
        "\n| step | threads | genmodels | in-place twin | weight*mask twin | compile(in-place) "
        "| vs in-place | vs weight*mask | vs compile |\n|---|---:|" + "---:|" * 7
    )
    blank = [""] * (len(PIXELCNN_PROVIDERS) - len(providers))
    with competing_load() if contended else nullcontext():
        all_threads = torch.get_num_threads()
        for threads in args.threads.split(","):
            auto = threads == "auto"
            torch.set_num_threads(all_threads if auto else int(threads))
            chosen: dict = {}
            for name, *med in interleaved(args.rounds, args.models.split(","), providers,
                                          auto_threads=auto, chosen=chosen):  # fmt: skip
                if auto:  # the count each provider's chooser settled on
                    threads = "auto: " + "/".join(str(chosen[name, p]) for p in providers)
                cells = [f"{t * 1e3:.2f} ms" for t in med] + blank
                cells += [f"{t / med[0]:.2f}x" for t in med[1:]] + blank
                print(f"| {name} | {threads} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average after {load_average()}")


def _median_ms(fn, rounds: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def op_shares(rounds: int = 30) -> list[tuple[str, float, float]]:
    """(what, genmodels ms, recipe ms): the pieces in which the VAE and the DCGAN step
    differ from their plain twins, at the step's own shapes (the op alone, forward +
    backward; the DCGAN's whole critic step). The rest of those steps is the same
    convolutions for both."""
    from genmodels.ops import gradient_penalty as penalty_op
    from genmodels.ops import reparameterize_kl
    from genmodels.recipes import reparameterize_kl_recipe

    latent = VAE().latent_dim
    mu = torch.randn(BATCH, latent, device=DEVICE, requires_grad=True)
    logvar = torch.randn(BATCH, latent, device=DEVICE, requires_grad=True)
    grads = torch.randn(BATCH, 1, 8, 8, device=DEVICE, requires_grad=True)

    def sampler(fn):
        def run():
            z, kl = fn(mu, logvar)
            (z.sum() + kl.sum()).backward()

        return run

    def penalty(fn):
        return lambda: fn(grads).backward()

    def norm_recipe(g):
        return ((g.view(g.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()

    torch.manual_seed(0)
    gan = DCGAN().to(DEVICE)
    D, real = gan.discriminator, gan.to_unit(_levels(BATCH))
    with torch.no_grad():
        fake = gan.generator(gan.latents(BATCH))
    opt_d = _adam(D.parameters())

    def critic_step(recipe: bool):
        def run():
            loss = gan_losses.critic_loss("wgan-gp", D(real), D(fake))
            if recipe:
                loss = loss + canonical_penalty(D, real, fake)
            else:
                loss = loss + gradient_penalty(D, real, fake, method="auto")
            _update(loss, opt_d)

        return run

    return [
        ("VAE sampler (reparameterize + KL)", _median_ms(sampler(reparameterize_kl), rounds),
         _median_ms(sampler(reparameterize_kl_recipe), rounds)),
        ("DCGAN penalty on the input gradients", _median_ms(penalty(penalty_op), rounds),
         _median_ms(penalty(norm_recipe), rounds)),
        ("DCGAN critic step (loss, penalty, backward, Adam)",
         _median_ms(critic_step(False), rounds), _median_ms(critic_step(True), rounds)),
    ]  # fmt: skip


if __name__ == "__main__" and "--pixelcnn" in sys.argv:
    pixelcnn_main(sys.argv[1:])
elif __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    print(f"device {DEVICE}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| model | genmodels | plain PyTorch | speed-up |\n|---|---:|---:|---:|")
    for name, ours, plain in interleaved(rounds):
        print(f"| {name} | {ours * 1e3:.2f} ms | {plain * 1e3:.2f} ms | {plain / ours:.2f}x |")
    print("\n| the op alone (forward + backward) | genmodels | recipe |\n|---|---:|---:|")
    for what, ours, plain in op_shares(rounds):
        print(f"| {what} | {ours:.3f} ms | {plain:.3f} ms |")
