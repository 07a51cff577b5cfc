"""The speed table behind `genmodels bench`: each op's forward + backward against the
plain-PyTorch recipe (genmodels.recipes) and torch.compile of it, at one size per op.
Every op in genmodels.ops.__all__ has a case here (tests/test_columns.py checks it)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from genmodels import ops, recipes


@dataclasses.dataclass
class Case:
    op: str
    shape: str
    make_inputs: Callable[[torch.device], tuple[list[torch.Tensor], list[torch.Tensor]]]
    ours: Callable
    recipe: Callable


def _reparameterize_kl_case(device: torch.device) -> Case:
    rows, cols = (4096, 4096) if device.type == "cuda" else (256, 32768)

    def make_inputs(dev):
        mu = torch.randn(rows, cols, device=dev, requires_grad=True)
        logvar = torch.randn(rows, cols, device=dev, requires_grad=True)
        grads = [torch.randn(rows, cols, device=dev), torch.randn(rows, device=dev)]
        return [mu, logvar], grads

    return Case(
        "reparameterize_kl",
        f"{rows}x{cols}",
        make_inputs,
        lambda mu, lv: ops.reparameterize_kl(mu, lv),
        recipes.reparameterize_kl_recipe,
    )


def _masked_conv2d_case(k: int):
    def make(device: torch.device) -> Case:
        batch, channels, size = (64, 256, 32) if device.type == "cuda" else (16, 64, 28)

        def make_inputs(dev):
            x = torch.randn(batch, channels, size, size, device=dev, requires_grad=True)
            w = torch.randn(channels, channels, k, k, device=dev) * (channels * k * k) ** -0.5
            b = torch.zeros(channels, device=dev)
            grads = [torch.randn(batch, channels, size, size, device=dev)]
            return [x, w.requires_grad_(), b.requires_grad_()], grads

        mask = ops.make_mask(channels, channels, k, "B", 1, device=device)
        return Case(
            f"masked_conv2d {k}x{k} B",
            f"{batch}x{channels}x{size}x{size}",
            make_inputs,
            lambda x, w, b: ops.masked_conv2d(x, w, b, mask_type="B"),
            lambda x, w, b: recipes.masked_conv2d_recipe(x, w, b, mask),
        )

    return make


def _grad_reverse_case(device: torch.device) -> Case:
    # ADDA/DANN features: a batch of 500-d encoder outputs (the LeNet encoder's width).
    batch, width = (4096, 500) if device.type == "cuda" else (256, 500)

    def make_inputs(dev):
        x = torch.randn(batch, width, device=dev, requires_grad=True)
        return [x], [torch.randn(batch, width, device=dev)]

    return Case(
        "grad_reverse",
        f"{batch}x{width}",
        make_inputs,
        lambda x: ops.grad_reverse(x, 0.5),
        lambda x: recipes.grad_reverse_recipe(x, 0.5),
    )


def _masked_conv2d_gated_case(device: torch.device) -> Case:
    batch, channels, size = (64, 128, 32) if device.type == "cuda" else (16, 64, 28)

    def make_inputs(dev):
        x = torch.randn(batch, channels, size, size, device=dev, requires_grad=True)
        w = torch.randn(2 * channels, channels, 3, 3, device=dev) * (channels * 9) ** -0.5
        b = torch.zeros(2 * channels, device=dev)
        grads = [torch.randn(batch, channels, size, size, device=dev)]
        return [x, w.requires_grad_(), b.requires_grad_()], grads

    mask = ops.make_mask(2 * channels, channels, 3, "B", 1, device=device)
    return Case(
        "masked_conv2d_gated 3x3 B",
        f"{batch}x{channels}x{size}x{size}",
        make_inputs,
        lambda x, w, b: ops.masked_conv2d_gated(x, w, b, mask_type="B"),
        lambda x, w, b: recipes.masked_conv2d_gated_recipe(x, w, b, mask),
    )


def _gate_case(device: torch.device) -> Case:
    shape = (64, 256, 16, 16) if device.type == "cuda" else (64, 256, 8, 8)

    def make_inputs(dev):
        pre = torch.randn(*shape, device=dev, requires_grad=True)
        out = (shape[0], shape[1] // 2, *shape[2:])
        return [pre], [torch.randn(*out, device=dev)]

    return Case("gate", "x".join(map(str, shape)), make_inputs, ops.gate, recipes.gate_recipe)


def _gradient_penalty_case(device: torch.device) -> Case:
    rows, cols = (4096, 4096) if device.type == "cuda" else (256, 12288)

    def make_inputs(dev):
        grads = torch.randn(rows, cols, device=dev, requires_grad=True)
        return [grads], [torch.ones((), device=dev)]

    return Case(
        "gradient_penalty",
        f"{rows}x{cols}",
        make_inputs,
        lambda g: ops.gradient_penalty(g),
        recipes.gradient_penalty_recipe,
    )


def _dropout_case(device: torch.device) -> Case:
    shape = (4096, 4096) if device.type == "cuda" else (64, 32, 28, 28)

    def make_inputs(dev):
        x = torch.randn(*shape, device=dev, requires_grad=True)
        return [x], [torch.randn(*shape, device=dev)]

    return Case(
        "dropout p=0.2",
        "x".join(map(str, shape)),
        make_inputs,
        lambda x: ops.dropout(x, 0.2),
        lambda x: recipes.dropout_recipe(x, 0.2),
    )


def _pixel_lstm_case(op: str):
    def make(device: torch.device) -> Case:
        batch, channels, size = (64, 64, 8) if device.type == "cpu" else (64, 128, 32)
        k = 3 if op == "row_lstm" else 2

        def make_inputs(dev):
            gates_x = torch.randn(batch, 4 * channels, size, size, device=dev, requires_grad=True)
            w = torch.randn(4 * channels, channels, k, device=dev) * (channels * k) ** -0.5
            b = torch.zeros(4 * channels, device=dev)
            grads = [torch.randn(batch, channels, size, size, device=dev)]
            return [gates_x, w.requires_grad_(), b.requires_grad_()], grads

        if op == "row_lstm":
            ours, recipe = ops.row_lstm, recipes.row_lstm_recipe
        else:
            ours, recipe = ops.diagonal_lstm, recipes.diagonal_lstm_recipe
        return Case(
            op,
            f"{batch}x{4 * channels}x{size}x{size}",
            make_inputs,
            lambda gx, w, b: ours(gx, w, b),
            lambda gx, w, b: recipe(gx, w, b),
        )

    return make


def _pixelcnn_residual_block_case(device: torch.device) -> Case:
    # The default PixelCNN's block on the digits' batches: [64, 64, 8, 8], 64 -> 32 -> 64.
    batch, channels, size = (64, 128, 32) if device.type == "cuda" else (64, 64, 8)
    hidden = channels // 2

    def make_inputs(dev):
        x = torch.randn(batch, channels, size, size, device=dev, requires_grad=True)
        shapes = [(hidden, channels, 1, 1), (hidden,), (hidden, hidden, 3, 3), (hidden,),
                  (channels, hidden, 1, 1), (channels,)]  # fmt: skip
        ps = [(torch.randn(s, device=dev) * 0.1).requires_grad_() for s in shapes]
        return [x, *ps], [torch.randn(batch, channels, size, size, device=dev)]

    return Case(
        "pixelcnn_residual_block p=0.2",
        f"{batch}x{channels}x{size}x{size}",
        make_inputs,
        lambda x, *ps: ops.pixelcnn_residual_block(x, *ps, p=0.2),
        lambda x, *ps: recipes.pixelcnn_residual_block_recipe(x, *ps, 0.2),
    )


CASES = [
    _reparameterize_kl_case,
    _masked_conv2d_case(7),
    _masked_conv2d_case(3),
    _masked_conv2d_gated_case,
    _gate_case,
    _gradient_penalty_case,
    _dropout_case,
    _pixel_lstm_case("row_lstm"),
    _pixel_lstm_case("diagonal_lstm"),
    _grad_reverse_case,
    _pixelcnn_residual_block_case,
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_full_step(fn, inputs, grads, device, repeat: int) -> float:
    """Best wall time of forward + backward over `repeat` runs, after two warm-ups."""

    def step():
        for t in inputs:
            t.grad = None
        outputs = fn(*inputs)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        torch.autograd.backward(list(outputs), grads[: len(outputs)])

    best = float("inf")
    for i in range(repeat + 2):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return best


def speed_table(device: torch.device, repeat: int = 5, compile: bool = True) -> list[dict]:
    results = []
    for make_case in CASES:
        case = make_case(device)
        inputs, grads = case.make_inputs(device)
        providers = {"genmodels": case.ours, "recipe": case.recipe}
        if compile:
            providers["compiled recipe"] = torch.compile(case.recipe)
        times = {
            name: time_full_step(fn, inputs, grads, device, repeat)
            for name, fn in providers.items()
        }
        for name, seconds in times.items():
            results.append(
                {
                    "op": case.op,
                    "shape": case.shape,
                    "provider": name,
                    "ms": seconds * 1e3,
                    "speedup_vs_recipe": times["recipe"] / seconds,
                    "speedup_vs_compiled": times["compiled recipe"] / seconds if compile else None,
                }
            )
    return results


def format_table(results: list[dict], device: torch.device) -> str:
    lines = [
        f"forward + backward on {device} ({torch.get_num_threads()} threads), best of the runs",
        f"{'op':<20} {'shape':<12} {'provider':<16} {'ms':>10} "
        f"{'vs recipe':>9} {'vs compiled':>12}",
    ]
    for r in results:
        vs_compiled = f"{r['speedup_vs_compiled']:.2f}x" if r["speedup_vs_compiled"] else "-"
        lines.append(
            f"{r['op']:<20} {r['shape']:<12} {r['provider']:<16} {r['ms']:>10.2f} "
            f"{r['speedup_vs_recipe']:>8.2f}x {vs_compiled:>12}"
        )
    return "\n".join(lines)
