"""How far method="finite-difference" is from the exact (autograd) critic gradient.

Draws many random DCGAN critics and batches, computes the WGAN-GP penalty's parameter
gradient exactly (double backward) and by finite differences for several steps, and
prints the distribution of the relative error ||g_fd - g|| / ||g|| (whole parameter vector).

    python benchmarks/fd_error.py --activation leaky_relu --critics 20 --batch 16
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from critics import DCGANCritic  # noqa: E402

from genmodels.gan import gradient_penalty  # noqa: E402


def _flat_grad(D):
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in D.parameters()]
    )


def measure(activation, steps, critics, batch, image_size, width, kind="wgan-gp", seed=0):
    errors = {s: [] for s in steps}
    for i in range(critics):
        torch.manual_seed(seed + i)
        D = DCGANCritic(image_size, 3, width, activation)
        real = torch.rand(batch, 3, image_size, image_size) * 2 - 1
        fake = torch.tanh(torch.randn(batch, 3, image_size, image_size))
        kw = dict(alpha=torch.rand(batch)) if kind == "wgan-gp" else {}
        D.zero_grad()
        gradient_penalty(D, real, fake, kind=kind, **kw).backward()
        exact = _flat_grad(D)
        for s in steps:
            D.zero_grad()
            gradient_penalty(
                D, real, fake, kind=kind, method="finite-difference", fd_step=s, **kw
            ).backward()
            errors[s].append(((_flat_grad(D) - exact).norm() / exact.norm()).item())
    return {s: torch.tensor(e) for s, e in errors.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--activation", default="leaky_relu")
    parser.add_argument("--critics", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--kind", default="wgan-gp")
    parser.add_argument("--steps", default="1e-5,1e-4,1e-3,1e-2,1e-1")
    args = parser.parse_args()
    steps = [float(s) for s in args.steps.split(",")]
    errors = measure(
        args.activation, steps, args.critics, args.batch, args.image_size, args.width, args.kind
    )
    print(
        f"{args.activation} DCGAN critic {args.image_size}x{args.image_size} width {args.width}, "
        f"B={args.batch}, {args.critics} random critics/batches, kind={args.kind}, float32"
    )
    print("| fd_step | median | p90 | max |  (relative L2 error of the parameter gradient)")
    print("|---|---|---|---|")
    for s, e in errors.items():
        q = torch.quantile(e, torch.tensor([0.5, 0.9])).tolist()
        print(f"| {s:g} | {q[0]:.3g} | {q[1]:.3g} | {e.max().item():.3g} |")


if __name__ == "__main__":
    main()
