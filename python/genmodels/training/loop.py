"""The training loop, in phases: set-up, resume, one epoch, final evaluation.

The loop is model-agnostic (what a model's data, steps and metrics are is its Task's job,
see training/tasks.py); it owns the run directory (lock, checkpoint, log, samples,
metrics), resume, DDP, the learning-rate schedule, NaN stops, model selection and progress.

Per epoch, rank 0 writes the checkpoint first and the log after it, so `log.csv` never
lists an epoch that `checkpoint.pt` lacks; nothing of an epoch is written when its
training loss, its validation scores, the parameters or the optimizer state are not finite.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from genmodels import _backend
from genmodels.data import Splits, load
from genmodels.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from genmodels.training.images import save_grid
from genmodels.training.rundir import (
    RunError,
    RunLock,
    atomic_write,
    check_writable,
    remove_stale_temporaries,
)
from genmodels.training.tasks import TASKS, Task
from genmodels.training.threads import ThreadChooser, parse_threads

CHECKPOINT = "checkpoint.pt"
SAMPLES = "samples.png"
METRICS = "metrics.json"
LOG = "log.csv"
FORMAT = 1
RUN_FILES = (CHECKPOINT, LOG, SAMPLES, METRICS)
# Far beyond any useful run; larger values are refused rather than trained "forever".
MAX_EPOCHS = 1_000_000


class TrainingDiverged(RunError):
    """The loss, a validation score, a parameter or the optimizer state became NaN or
    infinite; the last good checkpoint is left as it was."""


# Settings that define what a run computes: stored in its checkpoint, taken from there on
# resume, and refused when given with another value. None in TrainConfig means "not given".
RUN_SETTINGS = {
    "data": "digits",
    "target_data": None,
    "batch_size": 64,
    "lr": None,
    "seed": 0,
    "loss": None,
    "binarize": False,
    "amp": False,
    "model_kwargs": {},
}


@dataclasses.dataclass
class TrainConfig:
    """What to train. Fields left None take the model's defaults, or on resume the run's own."""

    model: str | None = None
    data: str | None = None  # "digits"
    epochs: int | None = None
    batch_size: int | None = None  # 64
    lr: float | None = None
    seed: int | None = None  # 0
    device: str = "cpu"
    amp: bool | None = None  # False
    out: str | None = None
    resume: str | None = None
    backend: str | None = None  # "auto"; the run's own on resume
    loss: str | None = None
    binarize: bool | None = None  # False
    progress: bool | None = None  # a progress bar when stderr is a terminal
    model_kwargs: dict | None = None  # {}
    overwrite: bool = False
    target_data: str | None = None  # a second data set, for tasks that take one
    sample_every: int = 10  # samples.png at most every N epochs (when validation improves)
    threads: int | str | None = None  # torch's default; "auto": timed (training/threads.py)

    def __post_init__(self):
        if self.model is None and self.resume is None:
            raise ValueError("train: give a model, or --resume DIR to continue a run")
        if self.model is not None and self.model not in TASKS:
            raise ValueError(f"model must be one of {sorted(TASKS)}, got {self.model!r}")
        for name in ("epochs", "batch_size", "sample_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.epochs is not None and self.epochs > MAX_EPOCHS:
            raise ValueError(f"epochs must be at most {MAX_EPOCHS}, got {self.epochs}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite, got {self.lr!r}")
        if self.backend is not None and self.backend not in _backend.BACKENDS:
            raise ValueError(f"backend must be one of {_backend.BACKENDS}, got {self.backend!r}")
        self.threads = parse_threads(self.threads)
        if self.resume is not None and self.overwrite:
            raise ValueError("--resume continues a run and --overwrite starts one over: not both")


@dataclasses.dataclass
class Run:
    """A run in progress: the resolved settings and everything the phases share."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    out: str
    task: Task
    model: torch.nn.Module
    net: torch.nn.Module
    optimizers: dict
    scaler: object
    epochs: int
    base_lr: float
    progress: bool
    state: dict
    lock: RunLock | None = None
    # Time spent writing the last epoch's files: counted into the next epoch's seconds.
    unsaved_seconds: float = 0.0
    threads: ThreadChooser | None = None


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
    text = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue().encode())


def _write_json(obj: dict, path: str) -> None:
    atomic_write(path, json.dumps(obj, indent=2).encode())


def _resume_path(path: str) -> str:
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    return path


@contextlib.contextmanager
def _backend_for_run(backend: str):
    """GENMODELS_BACKEND for the run's ops, restored afterwards (a later run in the same
    process must not inherit it)."""
    before = os.environ.get(_backend.ENV_VAR)
    if backend != "auto":
        os.environ[_backend.ENV_VAR] = backend
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_backend.ENV_VAR, None)
        else:
            os.environ[_backend.ENV_VAR] = before


# --------------------------------------------------------------------------- set-up


def resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, dict | None]:
    """The run's full settings: the defaults for a new run, the stored ones on resume (a
    flag that would change what the run computes is refused), and the checkpoint."""
    if cfg.resume is None:
        kind = cfg.model
        values = {k: default if getattr(cfg, k) is None else getattr(cfg, k)
                  for k, default in RUN_SETTINGS.items()}  # fmt: skip
        task_class = TASKS[kind]
        epochs = cfg.epochs or task_class.default_epochs
        values["lr"] = values["lr"] or task_class.default_lr
        out = cfg.out or os.path.join("runs", kind)
        backend = cfg.backend or "auto"
        return dataclasses.replace(
            cfg, **values, epochs=epochs, out=out, backend=backend, model=kind
        ), None

    path = _resume_path(cfg.resume)
    ckpt = load_checkpoint(path)
    kind = ckpt.get("model_kind")
    if kind not in TASKS:
        raise ValueError(f"--resume {path}: unknown model kind {kind!r}")
    if cfg.model is not None and kind != cfg.model:
        raise ValueError(f"--resume {path} holds a {kind!r}, not {cfg.model!r}")
    task_class = TASKS[kind]
    stored = ckpt.get("config", {})
    folder = os.path.dirname(os.path.abspath(path))
    if cfg.out is not None and os.path.realpath(cfg.out) != os.path.realpath(folder):
        raise ValueError(
            f"--resume continues the run in its own directory {folder}, not --out {cfg.out}"
        )
    conflicts, values = [], {}
    for name, default in RUN_SETTINGS.items():
        have = stored.get(name, default)
        if name == "lr" and have is None:
            have = task_class.default_lr
        if name == "model_kwargs" and have is None:
            have = {}
        given = getattr(cfg, name)
        if given is not None and given != have:
            conflicts.append(f"{_flag(name)} {given!r} (the run has {have!r})")
        values[name] = have
    have_epochs = stored.get("epochs") or task_class.default_epochs
    epochs = have_epochs
    if cfg.epochs is not None and cfg.epochs != have_epochs:
        done = int(ckpt.get("epoch", 0))
        if cfg.epochs < done:
            conflicts.append(f"--epochs {cfg.epochs} (the run has already trained {done})")
        elif task_class.schedule_depends_on_total:
            conflicts.append(
                f"--epochs {cfg.epochs} ({kind}'s learning-rate schedule spans the run's "
                f"{have_epochs} epochs, so its length cannot change)"
            )
        else:
            epochs = cfg.epochs
    if conflicts:
        raise ValueError(
            f"--resume {path}: a resumed run keeps its own settings; these would change "
            f"what it computes: {'; '.join(conflicts)}. Leave them out, or start a new run "
            "in another --out."
        )
    backend = cfg.backend or stored.get("backend") or "auto"
    resolved = dataclasses.replace(
        cfg, **values, model=kind, epochs=epochs, out=folder, backend=backend
    )
    return resolved, ckpt


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_splits(splits: Splits, flag: str, spec: str) -> None:
    """Every split non-empty, of one image shape and one number of levels, before training."""
    parts = {name: getattr(splits, name) for name in ("train", "val", "test")}
    for name, part in parts.items():
        if len(part) == 0:
            raise ValueError(
                f"{flag} {spec}: the {name} split is empty; training needs images in the "
                "train, validation and test splits"
            )
    shapes = {name: tuple(part.shape) for name, part in parts.items()}
    if len(set(shapes.values())) > 1:
        said = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in shapes.items())
        raise ValueError(f"{flag} {spec}: the splits have different image shapes ({said})")
    levels = {name: part.levels for name, part in parts.items()}
    if len(set(levels.values())) > 1:
        said = ", ".join(f"{n} {v}" for n, v in levels.items())
        raise ValueError(f"{flag} {spec}: the splits have different numbers of levels ({said})")


def _check_backend(backend: str, device: torch.device) -> None:
    if backend in ("native", "triton"):
        available = _backend.native_available if backend == "native" else _backend.triton_available
        ok, why = available(device.type)
        if not ok:
            raise ValueError(f"--backend {backend} is not available on {device.type}: {why}")


def _prepare_out(out: str) -> None:
    """The run directory exists and is writable (created only now, after every other check)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a directory")
    created = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot create the run directory ({exc.strerror})") from None
    try:
        check_writable(out)
    except BaseException:
        if created:
            os.rmdir(out)
        raise


def _claim(out: str, cfg: TrainConfig) -> RunLock:
    """Locks the run directory; refuses to start over a run unless told to; cleans up."""
    lock = RunLock(out).acquire()
    try:
        if cfg.resume is None and os.path.exists(os.path.join(out, CHECKPOINT)):
            if not cfg.overwrite:
                raise ValueError(
                    f"--out {out} already holds a run ({CHECKPOINT}); continue it with "
                    f"`genmodels train --resume {out}`, or start over with --overwrite"
                )
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(out, name))
        remove_stale_temporaries(out)
    except BaseException:
        lock.release()
        raise
    return lock


def set_up(cfg: TrainConfig) -> tuple[Run, dict | None]:
    """Checks everything (settings, backend, data, run directory) before any step; the run
    directory is created only when all else passed. Returns the run and the checkpoint to
    resume from, if any."""
    cfg, ckpt = resolve_config(cfg)
    device = _setup_distributed(cfg.device)
    rank, world = _world()
    _check_backend(cfg.backend, device)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002
    splits = load(cfg.data, binarize=cfg.binarize)
    check_splits(splits, "--data", cfg.data)
    if len(splits.train) < world:
        raise ValueError(f"--data {cfg.data}: {len(splits.train)} training images, {world} ranks")
    target = None
    if cfg.target_data is not None:
        target = load(cfg.target_data, binarize=cfg.binarize)
        check_splits(target, "--target-data", cfg.target_data)
    task = TASKS[cfg.model](splits, dict(cfg.model_kwargs), loss=cfg.loss, target=target)
    if ckpt is not None:
        _check_same_data(cfg, task, ckpt)
    model = task.build_model().to(device)
    optimizers = task.optimizers(model, cfg.lr)
    use_scaler = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    state = {"epoch": 0, "best_metric": None, "best_epoch": 0, "best_model": None, "log": [],
             "seconds": 0.0, "stage": task.stage(0, cfg.epochs), "sampled_epoch": 0}  # fmt: skip
    progress = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    run = Run(cfg=cfg, device=device, rank=rank, world=world, out=cfg.out, task=task,
              model=model, net=model, optimizers=optimizers, scaler=scaler, epochs=cfg.epochs,
              base_lr=cfg.lr, progress=progress, state=state)  # fmt: skip
    if rank == 0:
        _prepare_out(cfg.out)
        run.lock = _claim(cfg.out, cfg)
    return run, ckpt


def _check_same_data(cfg: TrainConfig, task: Task, ckpt: dict) -> None:
    stored, now = ckpt.get("model_config", {}), task.model_config()
    differ = {k: (stored.get(k), now.get(k)) for k in set(stored) | set(now)
              if stored.get(k) != now.get(k)}  # fmt: skip
    if ckpt.get("levels") not in (None, task.splits.levels):
        differ["levels"] = (ckpt.get("levels"), task.splits.levels)
    if differ:
        said = ", ".join(f"{k} {a!r} in the checkpoint, {b!r} now" for k, (a, b) in differ.items())
        raise ValueError(
            f"--resume {cfg.resume}: the checkpoint was trained on other data than "
            f"--data {cfg.data} gives now ({said})"
        )


def resume(run: Run, ckpt: dict) -> None:
    """Restores the model, optimizers, task, scaler, loop state and RNG from a checkpoint."""
    run.model.load_state_dict(ckpt["model"])
    for name, opt in run.optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    run.task.load_state_dict(ckpt.get("task", {}))
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.state.update({k: ckpt.get(k, v) for k, v in run.state.items()})
    if run.state["best_metric"] is not None and not math.isfinite(run.state["best_metric"]):
        run.state["best_metric"] = None  # older checkpoints start selection at inf
    set_rng_state(ckpt["rng"])


# --------------------------------------------------------------------------- one epoch


def run_epoch(run: Run, epoch: int) -> dict | None:
    """Trains epoch `epoch` (0-based), validates it and writes its files (rank 0); returns
    its log row on rank 0."""
    cfg, task, model, state = run.cfg, run.task, run.model, run.state
    start = time.perf_counter()
    stage = task.stage(epoch, run.epochs)
    if stage != state["stage"]:
        # Selection compares epochs of one stage: the final model comes from the last one.
        state.update(stage=stage, best_metric=None, best_epoch=0, best_model=None)
    task.begin_epoch(epoch, stage)
    model.train()
    # A function of the epoch alone, so a resumed run follows the same schedule.
    lr = task.learning_rate(run.base_lr, epoch, run.epochs)
    for opt in run.optimizers.values():
        for group in opt.param_groups:
            group["lr"] = lr
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    batches = task.epoch_batches(epoch, run.rank, run.world, generator, cfg.batch_size, run.device)
    progress = _progress(
        batches,
        run.progress and run.rank == 0,
        f"epoch {epoch + 1}/{run.epochs}",
        task.num_batches(run.world, cfg.batch_size),
    )
    losses, running, step = [], None, 0
    for step, batch in enumerate(progress, 1):
        with run.threads.step() if run.threads is not None else contextlib.nullcontext():
            stats = task.train_step(run.net, model, batch, run.optimizers, run.scaler, cfg.amp)
        loss = stats["loss"]
        if not math.isfinite(loss):
            _diverged(run, epoch, f"the loss became {loss} at step {step}")
        losses.append(loss)
        running = loss if running is None else 0.9 * running + 0.1 * loss
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(loss=f"{running:.4f}")
    if run.rank != 0:
        state["epoch"] = epoch + 1
        return None

    where = _non_finite_state(run)
    if where is not None:
        _diverged(run, epoch, f"{where} became non-finite")
    model.eval()
    scores = task.validate(model, task.splits.val, run.device)
    if not isinstance(scores, dict):
        scores = {task.selection_metric: scores}
    bad = [k for k, v in scores.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        _diverged(run, epoch, f"validation gave {', '.join(f'{k} {scores[k]}' for k in bad)}")

    metric = scores.get(task.selection_metric) if task.selection_metric else None
    best = state["best_metric"]
    improved = metric is not None and (
        best is None or (metric > best if task.higher_is_better else metric < best)
    )
    if improved:
        state["best_metric"], state["best_epoch"] = metric, epoch + 1
        state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    draw = (
        task.sample is not None
        and (improved or metric is None)
        and (state["sampled_epoch"] == 0 or epoch + 1 - state["sampled_epoch"] >= cfg.sample_every)
    )
    if draw:
        state["sampled_epoch"] = epoch + 1
    state["seconds"] += time.perf_counter() - start + run.unsaved_seconds
    # steps: this rank's optimizer steps (each of `world` ranks takes as many on its shard).
    row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "lr": lr, **scores,
           "seconds": round(state["seconds"], 3), "steps": step,
           "world_size": run.world}  # fmt: skip
    if len(task.stages) > 1:
        row["stage"] = stage
    state["log"].append(row)
    state["epoch"] = epoch + 1

    writing = time.perf_counter()
    # Checkpoint first: the log never lists an epoch the checkpoint does not have.
    save_checkpoint(_checkpoint(run), os.path.join(run.out, CHECKPOINT))
    _write_log(state["log"], os.path.join(run.out, LOG))
    if draw:
        _write_samples(run, model)
    run.unsaved_seconds = time.perf_counter() - writing
    said = f"  {task.selection_metric} {metric:.4f}" if metric is not None else ""
    print(
        f"epoch {epoch + 1}/{run.epochs}  train loss {row['train_loss']:.4f}{said}  "
        f"elapsed {state['seconds']:.1f}s",
        flush=True,
    )
    return row


def _diverged(run: Run, epoch: int, what: str) -> None:
    path = os.path.join(run.out, CHECKPOINT)
    kept = (
        f"the last good checkpoint {path} (epoch {run.state['epoch']}) is left as it was"
        if run.state["epoch"]
        else "no checkpoint was written"
    )
    raise TrainingDiverged(
        f"{run.cfg.model}: {what} in epoch {epoch + 1}; nothing of that epoch was saved and "
        f"{kept}. Try a lower --lr or disable --amp."
    )


def _non_finite_state(run: Run) -> str | None:
    """Where the parameters, buffers or optimizer state hold a NaN or infinity, if anywhere."""
    for name, value in run.model.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"the model's {name}"
    for opt_name, opt in run.optimizers.items():
        for param_state in opt.state.values():
            for key, value in param_state.items():
                if (
                    torch.is_tensor(value)
                    and value.is_floating_point()
                    and not bool(torch.isfinite(value).all())
                ):
                    return f"the {opt_name} optimizer's {key}"
    return None


def _write_samples(run: Run, model: torch.nn.Module) -> None:
    # Its own RNG stream: drawing a grid (or not) never changes the training draws.
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        images = run.task.sample(model, 64)
    save_grid(images, run.task.splits.levels, os.path.join(run.out, SAMPLES))


def _progress(steps, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, total=total, leave=False, unit="batch")


def _checkpoint(run: Run) -> dict:
    config = dataclasses.asdict(dataclasses.replace(run.cfg, resume=None, overwrite=False))
    return {
        "format": FORMAT,
        "model_kind": run.cfg.model,
        "model_config": run.task.model_config(),
        "config": config,
        "levels": run.task.splits.levels,
        "model": run.model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in run.optimizers.items()},
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "task": run.task.state_dict(),
        "rng": rng_state(),
        **run.state,
    }


# --------------------------------------------------------------------------- the end


def final_evaluation(run: Run) -> dict:
    """Test metrics of the selected model (rank 0), written to metrics.json with the final
    sample grid. `seconds` counts every epoch's training, validation and writes, and this."""
    start = time.perf_counter()
    final = copy.deepcopy(run.model)
    if run.state["best_model"] is not None:
        final.load_state_dict(run.state["best_model"])
    final.eval()
    metrics = run.task.evaluate(final, run.task.splits.test, run.device)
    if run.task.sample is not None:
        _write_samples(run, final)
    seconds = run.state["seconds"] + run.unsaved_seconds + time.perf_counter() - start
    metrics.update(epochs=run.state["epoch"], best_epoch=run.state["best_epoch"],
                   seconds=round(seconds, 3), device=str(run.device), model=run.cfg.model,
                   data=run.cfg.data)  # fmt: skip
    if run.cfg.target_data is not None:
        metrics["target_data"] = run.cfg.target_data
    _write_json(metrics, os.path.join(run.out, METRICS))
    print(json.dumps(metrics, indent=2), flush=True)
    return metrics


def train(cfg: TrainConfig) -> dict:
    """Trains cfg.model on cfg.data (or continues cfg.resume); returns the final test
    metrics (rank 0)."""
    run, ckpt = set_up(cfg)
    try:
        run.threads = ThreadChooser(run.cfg.threads, report=print if run.rank == 0 else None)
        with _backend_for_run(run.cfg.backend):
            if ckpt is not None:
                resume(run, ckpt)
            elif run.world > 1:
                torch.manual_seed(run.cfg.seed + 7919 * run.rank)  # each rank its own noise
            del ckpt
            if run.world > 1:
                run.net = run.task.wrap(run.model, run.device)
            for epoch in range(run.state["epoch"], run.epochs):
                run_epoch(run, epoch)
                if run.world > 1:
                    dist.barrier()
            metrics = final_evaluation(run) if run.rank == 0 else {}
            if run.world > 1:
                dist.barrier()
            return metrics
    finally:
        if run.threads is not None:
            run.threads.restore()
        if run.lock is not None:
            run.lock.release()
