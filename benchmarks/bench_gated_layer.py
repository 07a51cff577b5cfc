"""One Gated PixelCNN layer (GatedPixelCNNLayer(64, 64, 3), vertical and horizontal inputs
[16, 64, 28, 28]) against the same layer written with in-place masked weights and an eager
gate (benchmarks/plain_models.py's RecipeGatedLayer with InplaceMaskedConv2d): forward and
backward of both outputs, round-robin medians at 1 and 2 threads.

    python benchmarks/bench_gated_layer.py
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from plain_models import InplaceMaskedConv2d, RecipeGatedLayer  # noqa: E402

from genmodels.nn import GatedPixelCNNLayer  # noqa: E402


def main(rounds: int = 15) -> None:
    torch.manual_seed(0)
    layer = GatedPixelCNNLayer(64, 64, 3)
    twin = RecipeGatedLayer(layer, InplaceMaskedConv2d)
    v = torch.randn(16, 64, 28, 28, requires_grad=True)
    h = torch.randn(16, 64, 28, 28, requires_grad=True)
    grads = [torch.randn_like(t) for t in layer(v, h)]

    def run(m):
        return lambda: torch.autograd.backward(list(m(v, h)), grads)

    print(f"torch {torch.__version__}, GatedPixelCNNLayer(64, 64, 3), [16, 64, 28, 28], full")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        steps = {"genmodels": run(layer), "in-place recipe": run(twin)}
        times = {k: [] for k in steps}
        for i in range(rounds + 3):
            for k, f in steps.items():
                start = time.perf_counter()
                f()
                if i >= 3:
                    times[k].append(time.perf_counter() - start)
        ms = {k: statistics.median(t) * 1e3 for k, t in times.items()}
        print(
            f"threads {threads}: genmodels {ms['genmodels']:.1f} ms, in-place recipe "
            f"{ms['in-place recipe']:.1f} ms, {ms['in-place recipe'] / ms['genmodels']:.2f}x"
        )


if __name__ == "__main__":
    main()
