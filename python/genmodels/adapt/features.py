"""features.png: the test features of both domains in 2-D (PCA), before and after
adaptation, coloured by domain and by class: the picture that shows alignment."""

from __future__ import annotations

import io

import torch

from genmodels.training.rundir import atomic_write


def draw(rows: list[tuple[str, dict]], path: str) -> None:
    """One row per (title, picture) with picture = {"points" [N, 2], "domain" [N] (1 =
    source), "labels" [N]}: left coloured by domain, right by class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.2 * len(rows)), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (title, picture), (left, right) in zip(rows, axes, strict=True):
        points = torch.as_tensor(picture["points"]).float()
        domain = torch.as_tensor(picture["domain"]).bool()
        labels = torch.as_tensor(picture["labels"])
        for is_source, colour, name in (
            (True, "tab:blue", "source"),
            (False, "tab:orange", "target"),
        ):
            p = points[domain == is_source]
            left.scatter(p[:, 0], p[:, 1], s=4, c=colour, alpha=0.5, label=name, linewidths=0)
        left.legend(loc="best", markerscale=3)
        left.set_title(f"{title}\nby domain")
        for marker, is_source in (("o", True), ("x", False)):
            keep = domain == is_source
            right.scatter(points[keep, 0], points[keep, 1], s=6 if marker == "o" else 10,
                          c=labels[keep], cmap="tab10", vmin=-0.5, vmax=9.5, marker=marker,
                          alpha=0.6, linewidths=0 if marker == "o" else 0.8)  # fmt: skip
        right.set_title(f"{title}\nby class (o source, x target)")
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(path, buffer.getvalue())
