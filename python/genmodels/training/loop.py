"""The training loop: data order, steps, model selection, checkpoints, logs, DDP."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist

from genmodels import _backend
from genmodels.data import load
from genmodels.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from genmodels.training.images import save_grid
from genmodels.training.tasks import TASKS

CHECKPOINT = "checkpoint.pt"
SAMPLES = "samples.png"
METRICS = "metrics.json"
LOG = "log.csv"
FORMAT = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: str = "digits"
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    out: str | None = None
    resume: str | None = None
    backend: str = "auto"
    loss: str | None = None
    binarize: bool = False
    progress: bool = True
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.model not in TASKS:
            raise ValueError(f"model must be one of {sorted(TASKS)}, got {self.model!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.backend not in _backend.BACKENDS:
            raise ValueError(f"backend must be one of {_backend.BACKENDS}, got {self.backend!r}")


def _world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return dist.get_rank(), world
    return 0, 1


def _setup_distributed(device: str) -> torch.device:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda") and world > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def _write_log(rows: list[dict], path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_json(obj: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _resume_path(path: str) -> str:
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    return path


def train(cfg: TrainConfig) -> dict:
    """Trains cfg.model on cfg.data; returns the final test metrics (rank 0)."""
    if cfg.backend != "auto":
        os.environ[_backend.ENV_VAR] = cfg.backend
    device = _setup_distributed(cfg.device)
    rank, world = _world()
    out = cfg.out or os.path.join("runs", cfg.model)
    ckpt_path = os.path.join(out, CHECKPOINT)
    resume = _resume_path(cfg.resume) if cfg.resume else None

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002
    splits = load(cfg.data, binarize=cfg.binarize)
    task = TASKS[cfg.model](splits, dict(cfg.model_kwargs), loss=cfg.loss)
    model = task.build_model().to(device)
    epochs = cfg.epochs or task.default_epochs
    base_lr = cfg.lr or task.default_lr
    optimizers = task.optimizers(model, base_lr)
    use_scaler = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    state = {"epoch": 0, "best_metric": math.inf, "best_epoch": 0, "best_model": None,
             "log": [], "seconds": 0.0}  # fmt: skip

    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        if ckpt.get("model_kind") != cfg.model:
            raise ValueError(
                f"--resume {resume} holds a {ckpt.get('model_kind')!r}, not {cfg.model!r}"
            )
        model.load_state_dict(ckpt["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        task.load_state_dict(ckpt.get("task", {}))
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state.update({k: ckpt[k] for k in state})
        set_rng_state(ckpt["rng"])
    elif world > 1:
        torch.manual_seed(cfg.seed + 7919 * rank)  # each rank its own noise; DDP syncs weights

    net = task.wrap(model, device) if world > 1 else model
    if rank == 0:
        os.makedirs(out, exist_ok=True)

    train_data = splits.train
    per_rank = len(train_data) // world
    for epoch in range(state["epoch"], epochs):
        start = time.perf_counter()
        model.train()
        # A function of the epoch alone, so a resumed run follows the same schedule.
        lr = task.learning_rate(base_lr, epoch, epochs)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        order = torch.randperm(
            len(train_data), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        )
        order = order[rank::world][:per_rank]  # the same number of steps on every rank
        losses, running = [], None
        steps = range(0, per_rank, cfg.batch_size)
        progress = _progress(steps, cfg.progress and rank == 0, f"epoch {epoch + 1}/{epochs}")
        for i in progress:
            index = order[i : i + cfg.batch_size]
            x = train_data.images[index].to(device).long()
            y = train_data.labels[index].to(device)
            stats = task.train_step(net, model, x, y, optimizers, scaler, cfg.amp)
            loss = stats["loss"]
            if not math.isfinite(loss):
                kept = (
                    f"the last good checkpoint {ckpt_path} is left intact"
                    if state["epoch"]
                    else "no checkpoint was written"
                )
                raise TrainingDiverged(
                    f"{cfg.model}: the loss became {loss} at epoch {epoch + 1}, "
                    f"step {i // cfg.batch_size + 1}; {kept}. Try a lower --lr or disable --amp."
                )
            losses.append(loss)
            running = loss if running is None else 0.9 * running + 0.1 * loss
            if hasattr(progress, "set_postfix"):
                progress.set_postfix(loss=f"{running:.4f}")
        if rank == 0:
            model.eval()
            scores = task.validate(model, splits.val, device)
            if not isinstance(scores, dict):
                scores = {task.selection_metric: scores}
            metric = scores[task.selection_metric]
            state["seconds"] += time.perf_counter() - start
            if metric < state["best_metric"]:
                state["best_metric"], state["best_epoch"] = metric, epoch + 1
                state["best_model"] = {
                    k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                }
            save_grid(task.sample(model, 64), splits.levels, os.path.join(out, SAMPLES))
            row = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "lr": lr,
                **scores,
                "seconds": round(state["seconds"], 3),
            }
            state["log"].append(row)
            state["epoch"] = epoch + 1
            _write_log(state["log"], os.path.join(out, LOG))
            save_checkpoint(_checkpoint(cfg, task, model, optimizers, scaler, state), ckpt_path)
            print(
                f"epoch {epoch + 1}/{epochs}  train loss {row['train_loss']:.4f}  "
                f"{task.selection_metric} {metric:.4f}  ({state['seconds']:.1f}s)",
                flush=True,
            )
        else:
            state["epoch"] = epoch + 1
        if world > 1:
            dist.barrier()

    metrics = {}
    if rank == 0:
        final = copy.deepcopy(model)
        if state["best_model"] is not None:
            final.load_state_dict(state["best_model"])
        final.eval()
        metrics = task.evaluate(final, splits.test, device)
        metrics.update(epochs=state["epoch"], best_epoch=state["best_epoch"],
                       seconds=round(state["seconds"], 3), device=str(device),
                       model=cfg.model, data=cfg.data)  # fmt: skip
        save_grid(task.sample(final, 64), splits.levels, os.path.join(out, SAMPLES))
        _write_json(metrics, os.path.join(out, METRICS))
        print(json.dumps(metrics, indent=2), flush=True)
    if world > 1:
        dist.barrier()
    return metrics


def _progress(steps, enabled: bool, desc: str):
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, leave=False, unit="batch")


def _checkpoint(cfg, task, model, optimizers, scaler, state) -> dict:
    return {
        "format": FORMAT,
        "model_kind": cfg.model,
        "model_config": task.model_config(),
        "config": dataclasses.asdict(cfg),
        "levels": task.splits.levels,
        "model": model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "task": task.state_dict(),
        "rng": rng_state(),
        **state,
    }
