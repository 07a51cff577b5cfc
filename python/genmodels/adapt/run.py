"""`genmodels adapt METHOD` and `genmodels adapt compare`: settings checked up front, the
run itself by the genmodels training loop, then metrics.json and features.png."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import torch

from genmodels.training.checkpoint import load_checkpoint
from genmodels.training.loop import CHECKPOINT, METRICS, TrainConfig, _resume_path, train
from genmodels.training.rundir import atomic_write

METHODS = ("source-only", "grad-reverse", "confusion", "adda")
FEATURES = "features.png"
TABLE = "table.md"
# Options that go to the task (checkpointed as the run's model_kwargs).
OPTIONS = ("encoder", "image_size", "grayscale", "source_size", "target_size",
           "pretrain_epochs", "source_shift", "adversary", "confusion_weight")  # fmt: skip


def task_name(method: str) -> str:
    return f"adapt-{method}"


@dataclasses.dataclass
class AdaptConfig:
    """One adaptation run. Fields left None take the defaults, or on resume the run's own."""

    method: str | None = None
    source: str | None = None  # "synth-digits"
    target: str | None = None  # "digits"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    device: str = "cpu"
    out: str | None = None
    resume: str | None = None
    overwrite: bool = False
    progress: bool | None = None
    backend: str | None = None
    encoder: str | None = None
    image_size: int | None = None
    grayscale: bool | None = None
    source_size: int | None = None
    target_size: int | None = None
    pretrain_epochs: int | None = None
    source_shift: int | None = None
    adversary: str | None = None
    confusion_weight: float | None = None
    threads: int | str | None = None

    def options(self) -> dict:
        # `is`, not `in (None, False)`: a weight of 0.0 equals False but is a setting.
        return {k: v for k in OPTIONS if (v := getattr(self, k)) is not None and v is not False}


def _same_data(a: str, b: str) -> bool:
    kind_a, _, path_a = a.partition(":")
    kind_b, _, path_b = b.partition(":")
    if kind_a != kind_b:
        return False
    if kind_a in ("digits", "synth-digits"):
        return path_a == path_b
    return os.path.realpath(path_a) == os.path.realpath(path_b)


def check(cfg: AdaptConfig) -> None:
    """Errors that need no data: unknown method, source == target, misplaced options."""
    if cfg.resume is None:
        if cfg.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {cfg.method!r}")
    elif cfg.method is not None and cfg.method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {cfg.method!r}")
    source, target = cfg.source or "synth-digits", cfg.target or "digits"
    if cfg.resume is None and _same_data(source, target):
        raise ValueError(
            f"--source and --target are the same data set ({source!r}): adaptation needs two"
        )
    if cfg.adversary is not None and cfg.method not in (None, "adda"):
        raise ValueError(f"--adversary applies to adda only, not {cfg.method}")
    if cfg.confusion_weight is not None and cfg.method not in (None, "confusion"):
        raise ValueError(f"--confusion-weight applies to confusion only, not {cfg.method}")
    if cfg.pretrain_epochs is not None and cfg.method == "source-only":
        raise ValueError("--pretrain-epochs applies to the adapting methods; use --epochs")


def _options_on_resume(cfg: AdaptConfig) -> None:
    """A resumed run keeps its own options: refuse one given with another value."""
    ckpt = load_checkpoint(_resume_path(cfg.resume))
    stored = (ckpt.get("config") or {}).get("model_kwargs") or {}
    differ = [f"--{k.replace('_', '-')} {v!r} (the run has {stored.get(k)!r})"
              for k, v in cfg.options().items() if stored.get(k) != v]  # fmt: skip
    kind = ckpt.get("model_kind")
    if cfg.method is not None and kind != task_name(cfg.method):
        differ.append(f"method {cfg.method!r} (the run is {kind!r})")
    if differ:
        raise ValueError(
            f"--resume {cfg.resume}: a resumed run keeps its own settings: {'; '.join(differ)}"
        )


def train_config(cfg: AdaptConfig) -> TrainConfig:
    resuming = cfg.resume is not None
    if resuming:
        _options_on_resume(cfg)
    method = cfg.method
    return TrainConfig(
        model=task_name(method) if method else None,
        data=cfg.source if resuming else (cfg.source or "synth-digits"),
        target_data=cfg.target if resuming else (cfg.target or "digits"),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        device=cfg.device,
        out=cfg.out or (None if resuming else os.path.join("runs", f"adapt-{method}")),
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        progress=cfg.progress,
        backend=cfg.backend,
        model_kwargs=None if resuming else cfg.options(),
        threads=cfg.threads,
    )


def adapt(cfg: AdaptConfig) -> dict:
    """Runs one adaptation method; returns metrics.json's contents (rank 0; {} elsewhere)."""
    check(cfg)
    metrics = train(train_config(cfg))
    if not metrics:  # a DDP rank other than 0
        return metrics
    out = _run_directory(cfg)
    ckpt = load_checkpoint(os.path.join(out, CHECKPOINT))
    config = ckpt["config"]
    metrics.update(source=config["data"], target=config["target_data"])
    atomic_write(os.path.join(out, METRICS), json.dumps(metrics, indent=2).encode())
    write_features(ckpt, os.path.join(out, FEATURES))
    return metrics


def _run_directory(cfg: AdaptConfig) -> str:
    if cfg.resume is not None:
        return os.path.dirname(os.path.abspath(_resume_path(cfg.resume)))
    return cfg.out or os.path.join("runs", f"adapt-{cfg.method}")


def write_features(ckpt: dict, path: str) -> None:
    """features.png of a finished run: before adaptation (stored when it began) and after."""
    from genmodels.adapt.features import draw
    from genmodels.data import load
    from genmodels.training.tasks import TASKS

    config = ckpt["config"]
    task = TASKS[ckpt["model_kind"]](
        load(config["data"]), dict(config["model_kwargs"]), target=load(config["target_data"])
    )
    model = task.model_class(**ckpt["model_config"])
    weights = ckpt["best_model"] if ckpt.get("best_model") else ckpt["model"]
    model.load_state_dict(weights)
    rows = []
    before = (ckpt.get("task") or {}).get("before")
    if before is not None:
        rows.append(("before adaptation (the source model)", before))
    title = "source only" if task.method == "source-only" else f"after adaptation ({task.method})"
    rows.append((title, task.feature_picture(model.eval())))
    draw(rows, path)


# --- compare ---------------------------------------------------------------------------


def compare(
    base: AdaptConfig, seeds: int = 3, out: str | None = None, methods=METHODS
) -> dict[str, list[float]]:
    """Every method for seeds 0 .. seeds-1 with the same settings; writes OUT/table.md
    (mean +- sample standard deviation of the target accuracy). A finished run (its
    metrics.json exists) is read back, an interrupted one resumed."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be a positive int, got {seeds!r}")
    out = out or os.path.join("runs", "adapt-compare")
    source, target = base.source or "synth-digits", base.target or "digits"
    for method in methods:
        check(_for_method(base, method))
    results: dict[str, list[float]] = {}
    for method in methods:
        for seed in range(seeds):
            run = os.path.join(out, f"{method}-seed{seed}")
            results.setdefault(method, []).append(_one(base, method, seed, run)["target_accuracy"])
    text = table(results, source, target, seeds)
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, TABLE), text.encode())
    print(text, flush=True)
    return results


def _for_method(base: AdaptConfig, method: str, **changes) -> AdaptConfig:
    """`compare`'s settings for one method: the options of other methods left out."""
    return dataclasses.replace(
        base, method=method,
        adversary=base.adversary if method == "adda" else None,
        confusion_weight=base.confusion_weight if method == "confusion" else None,
        pretrain_epochs=None if method == "source-only" else base.pretrain_epochs, **changes,
    )  # fmt: skip


def _one(base: AdaptConfig, method: str, seed: int, run: str) -> dict:
    metrics_path = os.path.join(run, METRICS)
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            return json.load(f)
    # Source only trains as long as the other methods' pretraining stage.
    epochs = base.pretrain_epochs if method == "source-only" else base.epochs
    cfg = _for_method(base, method, seed=seed, out=run, epochs=epochs)
    if os.path.isfile(os.path.join(run, CHECKPOINT)):
        cfg = AdaptConfig(
            resume=run, device=base.device, progress=base.progress, threads=base.threads
        )
    return adapt(cfg)


def table(results: dict[str, list[float]], source: str, target: str, seeds: int) -> str:
    header = f"{source} -> {target}"
    lines = [
        f"Target test accuracy, mean +- sample standard deviation over seeds 0..{seeds - 1}.",
        "",
        f"| method | {header} | per seed |",
        "|---|---|---|",
    ]
    for method, values in results.items():
        t = torch.tensor(values, dtype=torch.float64)
        std = t.std().item() if len(values) > 1 else math.nan
        per_seed = ", ".join(f"{v:.3f}" for v in values)
        lines.append(f"| {method} | {t.mean().item():.3f} +- {std:.3f} | {per_seed} |")
    return "\n".join(lines) + "\n"
