import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from genmodels.cli import main
from genmodels.training import TrainConfig, load_checkpoint, loop, save_checkpoint, train
from genmodels.training.loop import TrainingDiverged
from genmodels.training.tasks import TASKS, Task, VAETask

SMALL = {"hidden_channels": 8, "latent_dim": 2}


def config(tmp_path, name="run", **kw):
    base = dict(model="vae", epochs=2, out=str(tmp_path / name), progress=False, model_kwargs=SMALL)
    return TrainConfig(**{**base, **kw})


def test_run_directory_contents(tmp_path):
    metrics = train(config(tmp_path, epochs=1))
    run = tmp_path / "run"
    assert {"checkpoint.pt", "samples.png", "metrics.json", "log.csv"} <= set(os.listdir(run))
    written = json.loads((run / "metrics.json").read_text())
    assert written == metrics
    for key in ("test_elbo_bpd", "test_iwae_bpd", "epochs", "seconds", "device"):
        assert key in written
    assert written["test_iwae_bpd"] <= written["test_elbo_bpd"] + 0.05
    assert (run / "log.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))  # weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["model_kind"] == "vae"


def test_resume_continues_exactly(tmp_path):
    train(config(tmp_path, "straight", epochs=2))
    train(config(tmp_path, "interrupted", epochs=1))
    resumed = train(config(tmp_path, "interrupted", epochs=2, resume=str(tmp_path / "interrupted")))
    a = load_checkpoint(str(tmp_path / "straight" / "checkpoint.pt"))
    b = load_checkpoint(str(tmp_path / "interrupted" / "checkpoint.pt"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["train_loss"] for r in a["log"]] == [r["train_loss"] for r in b["log"]]
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert straight["test_elbo_bpd"] == resumed["test_elbo_bpd"]


def test_pixelcnn_learning_rate_schedule_resumes_exactly(tmp_path, monkeypatch):
    tiny = {"hidden_channels": 6, "num_layers": 1}
    kw = dict(model="pixelcnn", model_kwargs=tiny, lr=1e-2)
    train(config(tmp_path, "straight", epochs=3, **kw))
    real_epoch = loop.run_epoch

    def interrupted_after_the_first_epoch(run, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(loop, "run_epoch", interrupted_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, "interrupted", epochs=3, **kw))
    monkeypatch.undo()
    # --resume DIR alone: the stored settings (3 epochs, lr, model) carry on.
    train(TrainConfig(resume=str(tmp_path / "interrupted"), progress=False))
    a = load_checkpoint(str(tmp_path / "straight" / "checkpoint.pt"))
    b = load_checkpoint(str(tmp_path / "interrupted" / "checkpoint.pt"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    lrs = [row["lr"] for row in a["log"]]
    assert lrs == [row["lr"] for row in b["log"]]
    assert lrs[0] == 1e-2 and lrs[0] > lrs[1] > lrs[2] > 0  # cosine decay over the 3 epochs


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    keys = {"model_kind": "vae", "model_config": {}, "config": {}, "levels": 17}
    save_checkpoint({**keys, "model": {"w": torch.ones(3)}, "epoch": 1}, str(path))

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({**keys, "model": {"w": torch.zeros(3)}, "epoch": 2}, str(path))
    monkeypatch.undo()
    assert load_checkpoint(str(path))["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pt"], "no temporary file is left behind"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train(config(tmp_path, epochs=1))
    good = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    real_step = VAETask.train_step

    def step(self, net, model, batch, optimizers, scaler, amp):
        stats = real_step(self, net, model, batch, optimizers, scaler, amp)
        return {**stats, "loss": float("nan")}

    monkeypatch.setattr(VAETask, "train_step", step)
    with pytest.raises(TrainingDiverged, match="epoch 2.*last good checkpoint"):
        train(config(tmp_path, epochs=3, resume=str(tmp_path / "run")))
    after = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert after["epoch"] == 1
    for key in good["model"]:
        assert torch.equal(good["model"][key], after["model"][key])


def test_cli_train_sample_evaluate(tmp_path, capsys):
    run = tmp_path / "cli"
    assert main(["train", "vae", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    grid = tmp_path / "grid.png"
    assert main(["sample", str(run / "checkpoint.pt"), "--n", "16", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 0
    inter = tmp_path / "inter.png"
    assert main(["sample", str(run), "--interpolate", "--n", "16", "--out", str(inter)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["test_iwae_bpd"] > 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "pixelsnail"], "invalid choice"),
        (["train", "vae", "--epochs", "zero"], "invalid int"),
        (["train", "vae", "--epochs", "0"], "epochs must be a positive int"),
        (["train", "vae", "--threads", "0"], "threads must be a positive int or 'auto'"),
        (["train", "vae", "--threads", "some"], "threads must be a positive int or 'auto'"),
        (["train", "vae", "--resume", "/nonexistent/run"], "/nonexistent/run"),
        (["train", "vae", "--data", "mnist:/nonexistent"], "/nonexistent"),
        (["sample", "/nonexistent/checkpoint.pt"], "/nonexistent/checkpoint.pt"),
        ([], "usage"),
    ],
)
def test_cli_bad_arguments_exit_with_usage(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "usage" in err and words in err


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", "29533", "-m", "genmodels", "train", "vae", "--epochs", "1",
           "--out", str(run), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    # Each rank ran half of the 1000 training images in batches of 64: 8 steps, not 16.
    with open(run / "log.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["world_size"]) == 2 and int(row["steps"]) == math.ceil(500 / 64)
    assert math.isfinite(float(row["train_loss"]))


def test_interpolation_uses_the_data_the_model_was_trained_on(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = torch.Generator().manual_seed(0)
    for i in range(20):
        pixels = torch.randint(0, 256, (8, 8, 3), generator=rng, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(images / f"{i}.png")
    run = tmp_path / "rgb"
    argv = ["train", "vae", "--data", f"folder:{images}", "--epochs", "1", "--out", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    grid = tmp_path / "inter.png"
    assert main(["sample", str(run), "--interpolate", "--n", "8", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 0


@pytest.mark.parametrize("model", ["pixelcnn", "gated-pixelcnn"])
def test_amp_training_on_cpu(tmp_path, model):
    # bfloat16 autocast on CPU, through the masked convolutions and the fused gate
    tiny = {"hidden_channels": 6, "num_layers": 2}
    metrics = train(config(tmp_path, epochs=1, model=model, amp=True, model_kwargs=tiny))
    assert 0 < metrics["test_bpd"] < 10


class ToyClassifier(torch.nn.Linear):
    def __init__(self, in_features: int = 64, num_classes: int = 10):
        super().__init__(in_features, num_classes)


class TwoStageToyTask(Task):
    """A classifier with two data streams and two stages: the shape of a domain-adaptation
    task, exercising every part of the Task interface the image models do not use."""

    name = "toy-two-stage"
    default_epochs = 3
    default_lr = 1e-2
    selection_metric = "val_accuracy"
    higher_is_better = True
    stages = ("pretrain", "adapt")
    takes_target = True
    sample = None
    model_class = ToyClassifier
    # Scores by epoch: lower is better would pick epoch 2 after the stage change, no reset
    # of the selection at the stage change would pick epoch 1.
    scores = (0.95, 0.6, 0.8)

    def model_config(self):
        return {}

    def stage(self, epoch, epochs):
        return "pretrain" if epoch == 0 else "adapt"

    def begin_epoch(self, epoch, stage):
        super().begin_epoch(epoch, stage)
        self.epoch = epoch

    def num_batches(self, world, batch_size):
        return -(-(len(self.splits.train) // world) // batch_size)

    def epoch_batches(self, epoch, rank, world, generator, batch_size, device):
        source, target = self.splits.train, self.target.train
        source_order = torch.randperm(len(source), generator=generator)[rank::world]
        target_order = torch.randperm(len(target), generator=generator)[rank::world]
        for i in range(0, len(source) // world, batch_size):
            s = source_order[i : i + batch_size]
            t = target_order[i : i + batch_size]
            yield source.images[s].float(), source.labels[s], target.images[t].float()

    def train_step(self, net, model, batch, optimizers, scaler, amp):
        x, y, t = batch
        loss = torch.nn.functional.cross_entropy(net(x.flatten(1)), y)
        if self.current_stage == "adapt":
            loss = loss + 1e-3 * net(t.flatten(1)).logsumexp(1).mean()
        optimizers["model"].zero_grad()
        loss.backward()
        optimizers["model"].step()
        self.seen.append((self.current_stage, len(batch)))
        return {"loss": loss.item()}

    seen: list = []

    def validate(self, model, data, device):
        return {"val_accuracy": self.scores[self.epoch], "val_loss": 1.0}

    @torch.no_grad()
    def evaluate(self, model, data, device):
        predicted = model(data.images.float().flatten(1)).argmax(1)
        return {"test_accuracy": (predicted == data.labels).float().mean().item()}


def test_a_task_with_two_data_sets_two_stages_and_no_samples(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, TwoStageToyTask.name, TwoStageToyTask)
    monkeypatch.setattr(TwoStageToyTask, "seen", [])
    kw = dict(model=TwoStageToyTask.name, target_data="digits", progress=False)
    metrics = train(TrainConfig(out=str(tmp_path / "straight"), **kw))
    assert "samples.png" not in os.listdir(tmp_path / "straight")
    assert metrics["best_epoch"] == 3 and metrics["target_data"] == "digits"
    assert 0 <= metrics["test_accuracy"] <= 1
    ckpt = load_checkpoint(str(tmp_path / "straight" / "checkpoint.pt"))
    assert [row["stage"] for row in ckpt["log"]] == ["pretrain", "adapt", "adapt"]
    stages = [stage for stage, _ in TwoStageToyTask.seen]
    assert stages == ["pretrain"] * 16 + ["adapt"] * 32  # 1000 images in batches of 64
    assert {n for _, n in TwoStageToyTask.seen} == {3}  # the task's own batch structure
    with pytest.raises(ValueError, match="vae trains on one data set"):
        train(config(tmp_path, target_data="digits"))

    # Interrupted at the stage change and resumed: the same weights as straight through.
    real_epoch = loop.run_epoch

    def stop_at_the_second_epoch(run, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(loop, "run_epoch", stop_at_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(tmp_path / "resumed"), **kw))
    monkeypatch.setattr(loop, "run_epoch", real_epoch)
    resumed = train(TrainConfig(resume=str(tmp_path / "resumed"), progress=False))
    other = load_checkpoint(str(tmp_path / "resumed" / "checkpoint.pt"))
    for key in ckpt["model"]:
        assert torch.equal(ckpt["model"][key], other["model"][key])
    assert resumed == {**metrics, "seconds": resumed["seconds"]}
