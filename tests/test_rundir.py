"""Run directories: locking, no silent overwrite, --resume DIR alone, divergence caught before
it is saved, data checked before training, clean errors, a full disk, file modes."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from genmodels import _backend
from genmodels.cli import main
from genmodels.data import ImageDataset, Splits
from genmodels.training import TrainConfig, load_checkpoint, loop, rundir, train
from genmodels.training.loop import TrainingDiverged
from genmodels.training.tasks import PixelCNNTask, VAETask

SMALL = {"hidden_channels": 8, "latent_dim": 2}
TINY_PIXELCNN = {"hidden_channels": 6, "num_layers": 1}


def config(out, **kw):
    base = dict(model="vae", epochs=1, out=str(out), progress=False, model_kwargs=SMALL)
    return TrainConfig(**{**base, **kw})


def snapshot(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def cli(*argv, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "genmodels", *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(predicate, process, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the run ended early ({process.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


# ------------------------------------------------------------------------ item 1: locking


@pytest.mark.slow
def test_a_second_run_on_a_busy_directory_fails_and_a_killed_runs_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    first = cli("train", "vae", "--epochs", "500", "--out", str(run), "--batch-size", "500")
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists(), first)
        second = cli("train", "vae", "--epochs", "1", "--out", str(run))
        out, err = second.communicate(timeout=300)
        assert second.returncode != 0
        assert f"{run} is in use by another run (pid {first.pid})" in err, err[-2000:]
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / ".lock").read_text().strip() == str(first.pid)  # a stale lock is left
    # A killed writer's temporaries, this version's names and the old fixed ones.
    stale = [f".checkpoint.pt.{first.pid}-0a1b2c3d.tmp", ".checkpoint-x1y2.tmp",
             "samples.png.tmp.png", "log.csv.tmp"]  # fmt: skip
    for name in stale:
        (run / name).write_bytes(b"")
    done = load_checkpoint(str(run / "checkpoint.pt"))["epoch"]
    third = cli("train", "--resume", str(run), "--epochs", str(done + 1), "--no-progress")
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-3000:]
    assert load_checkpoint(str(run / "checkpoint.pt"))["epoch"] == done + 1
    assert not set(stale) & set(os.listdir(run))
    assert (run / ".lock").read_text() == ""  # released at the end


def test_the_lock_is_held_during_a_run_and_released_after(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = []
    real_epoch = loop.run_epoch

    def epoch_with_a_second_claim(r, epoch):
        seen.append((run / ".lock").read_text().strip())
        with pytest.raises(rundir.RunDirectoryBusy, match=f"{run} is in use .*pid {os.getpid()}"):
            # flock conflicts between open file descriptions, also within one process
            rundir.RunLock(str(run)).acquire()
        return real_epoch(r, epoch)

    monkeypatch.setattr(loop, "run_epoch", epoch_with_a_second_claim)
    train(config(run))
    assert seen == [str(os.getpid())]
    with rundir.RunLock(str(run)):
        pass


def test_temporary_names_are_unique_and_in_the_same_directory(tmp_path, monkeypatch):
    names = []
    real_replace = os.replace

    def replace(src, dst):
        names.append(src)
        return real_replace(src, dst)

    monkeypatch.setattr(rundir.os, "replace", replace)
    for _ in range(2):
        rundir.atomic_write(str(tmp_path / "log.csv"), b"epoch\n")
    assert len(set(names)) == 2
    for name in names:
        assert os.path.dirname(name) == str(tmp_path)
        assert f".log.csv.{os.getpid()}-" in os.path.basename(name)
    assert os.listdir(tmp_path) == ["log.csv"]


# ------------------------------------------------------------- item 2: no silent overwrite


def test_an_existing_run_is_not_overwritten_without_overwrite(tmp_path):
    run = tmp_path / "run"
    train(config(run, epochs=2))
    before = snapshot(run)
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        train(config(run, epochs=1))
    assert snapshot(run) == before
    train(config(run, epochs=1, overwrite=True))
    assert load_checkpoint(str(run / "checkpoint.pt"))["epoch"] == 1
    assert len((run / "log.csv").read_text().splitlines()) == 2  # header and epoch 1


def test_cli_refuses_an_existing_run_and_takes_overwrite(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "vae", "--epochs", "1", "--out", run, "--no-progress"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["train", "vae", "--epochs", "1", "--out", run, "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"genmodels train --resume {run}" in err and "--overwrite" in err
    assert main(["train", "vae", "--epochs", "1", "--out", run, "--overwrite"]) == 0


# ------------------------------------------------------------------ item 3: --resume alone


def test_resume_dir_alone_continues_with_the_stored_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "elsewhere"
    argv = ["train", "vae", "--epochs", "1", "--batch-size", "100", "--seed", "3"]
    assert main([*argv, "--lr", "0.003", "--out", str(run), "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))
    assert ckpt["epoch"] == 2 and len(ckpt["log"]) == 2
    assert ckpt["config"]["batch_size"] == 100 and ckpt["config"]["seed"] == 3
    assert ckpt["config"]["lr"] == 0.003 and ckpt["config"]["data"] == "digits"
    assert not (tmp_path / "runs").exists(), "nothing is written to ./runs/vae"
    # The checkpoint path works as well as the directory; a finished run evaluates again.
    assert main(["train", "--resume", str(run / "checkpoint.pt"), "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


@pytest.fixture(scope="module")
def finished_vae(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "vae", "--epochs", "2", "--batch-size", "100", "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--batch-size", "32"], "--batch-size 32 (the run has 100)"),
        (["--data", "mnist:/x"], "--data 'mnist:/x' (the run has 'digits')"),
        (["--seed", "1"], "--seed 1"),
        (["--lr", "0.1"], "--lr 0.1"),
        (["--binarize"], "--binarize True"),
        (["--epochs", "0"], "epochs must be a positive int"),
    ],
)
def test_resume_refuses_flags_that_change_the_run(finished_vae, tmp_path, capsys, flags, words):
    run = tmp_path / "run"
    shutil.copytree(finished_vae, run)
    before = snapshot(run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["train", "--resume", str(run), *flags])
    assert info.value.code == 2
    assert words in capsys.readouterr().err
    assert snapshot(run) == before


def test_resume_refuses_another_model_and_another_out(tmp_path):
    run = tmp_path / "run"
    train(config(run))
    with pytest.raises(ValueError, match="holds a 'vae', not 'pixelcnn'"):
        train(TrainConfig(model="pixelcnn", resume=str(run), progress=False))
    with pytest.raises(ValueError, match="in its own directory"):
        train(TrainConfig(resume=str(run), out=str(tmp_path / "other"), progress=False))
    assert not (tmp_path / "other").exists()


def test_more_epochs_on_resume_only_where_the_schedule_allows(tmp_path):
    run = tmp_path / "pixelcnn"
    train(config(run, model="pixelcnn", model_kwargs=TINY_PIXELCNN, epochs=1))
    assert PixelCNNTask.schedule_depends_on_total and not VAETask.schedule_depends_on_total
    with pytest.raises(ValueError, match="--epochs 3 .*learning-rate schedule spans"):
        train(TrainConfig(resume=str(run), epochs=3, progress=False))
    vae = tmp_path / "vae"
    train(config(vae, epochs=1))
    train(TrainConfig(resume=str(vae), epochs=2, progress=False))
    assert load_checkpoint(str(vae / "checkpoint.pt"))["epoch"] == 2
    with pytest.raises(ValueError, match="already trained 2"):
        train(TrainConfig(resume=str(vae), epochs=1, progress=False))


def _image_folder(folder, mode, n=40, size=8):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    rng = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = torch.randint(0, 256, (size, size, channels), generator=rng, dtype=torch.uint8)
        Image.fromarray(pixels.squeeze(-1).numpy()).save(folder / f"{i}.png")


def test_a_checkpoint_of_other_data_is_a_clear_error(tmp_path):
    images = tmp_path / "images"
    _image_folder(images, "RGB")
    run = tmp_path / "run"
    train(config(run, data=f"folder:{images}", epochs=1))
    for f in images.iterdir():
        f.unlink()
    _image_folder(images, "L")
    with pytest.raises(ValueError, match="trained on other data.*in_channels 3 in the check"):
        train(TrainConfig(resume=str(run), epochs=2, progress=False))


# --------------------------------------------------------------------- item 4: divergence


def test_a_huge_learning_rate_stops_before_anything_is_written(tmp_path, capsys):
    # The reproduction of the issue: one step per epoch with lr 1e6.
    run = tmp_path / "run"
    argv = ["train", "vae", "--lr", "1e6", "--batch-size", "5000", "--epochs", "3"]
    assert main([*argv, "--out", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "in epoch 1" in err and "no checkpoint was written" in err
    assert set(os.listdir(run)) <= {".lock"}


def test_non_finite_parameters_after_the_last_step_keep_the_previous_epoch(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(config(run, epochs=1))
    before = snapshot(run)
    real_step = VAETask.train_step

    def step(self, net, model, batch, optimizers, scaler, amp):
        stats = real_step(self, net, model, batch, optimizers, scaler, amp)
        if len(batch[0]) < 64:  # the last step of the epoch (1000 = 15 * 64 + 40)
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))  # the update diverged, not the loss
        return stats

    monkeypatch.setattr(VAETask, "train_step", step)
    with pytest.raises(TrainingDiverged, match="became non-finite in epoch 2.*left as it was"):
        train(TrainConfig(resume=str(run), epochs=2, progress=False))
    assert snapshot(run) == before  # checkpoint, log, samples, metrics: all as they were


def test_non_finite_optimizer_state_and_validation_stop_the_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_step = VAETask.train_step

    def step(self, net, model, batch, optimizers, scaler, amp):
        stats = real_step(self, net, model, batch, optimizers, scaler, amp)
        state = next(iter(optimizers["model"].state.values()))
        state["exp_avg_sq"].fill_(float("inf"))
        return stats

    monkeypatch.setattr(VAETask, "train_step", step)
    with pytest.raises(TrainingDiverged, match="model optimizer's exp_avg_sq"):
        train(config(run))
    monkeypatch.undo()
    monkeypatch.setattr(VAETask, "validate", lambda self, model, data, device: float("inf"))
    with pytest.raises(TrainingDiverged, match="validation gave val_elbo_bpd inf"):
        train(config(run))
    assert not (run / "checkpoint.pt").exists() and not (run / "log.csv").exists()


# -------------------------------------------------------------- item 5: data before training


def _splits(train_n=20, val_n=10, test_n=10, test_size=8, levels=17):
    def part(n, size, name):
        images = torch.randint(0, levels, (n, 1, size, size), dtype=torch.uint8)
        return ImageDataset(images, torch.zeros(n, dtype=torch.long), levels, name)

    return Splits(
        part(train_n, 8, "t/train"), part(val_n, 8, "t/val"), part(test_n, test_size, "t/test")
    )


@pytest.mark.parametrize(
    "splits, words",
    [
        (dict(val_n=0), "the val split is empty"),
        (dict(train_n=0), "the train split is empty"),
        (dict(test_n=0), "the test split is empty"),
        (dict(test_size=6), "different image shapes (train 1x8x8, val 1x8x8, test 1x6x6)"),
    ],
)
def test_every_split_is_checked_before_training(tmp_path, monkeypatch, splits, words):
    monkeypatch.setattr(loop, "load", lambda spec, binarize=False: _splits(**splits))

    def no_step(*args, **kwargs):
        raise AssertionError("trained on bad data")

    monkeypatch.setattr(VAETask, "train_step", no_step)
    with pytest.raises(ValueError) as info:
        train(config(tmp_path / "run"))
    assert words in str(info.value) and "--data digits" in str(info.value)
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------- item 8: the output directory


def test_out_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["train", "vae", "--epochs", "1", "--out", str(target)])
    assert info.value.code == 2
    assert f"--out {target} is a file" in capsys.readouterr().err
    assert target.read_text() == "x"


def test_a_read_only_run_directory_is_found_before_the_first_epoch(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(config(run))
    before = snapshot(run)

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(rundir, "_probe", read_only)
    monkeypatch.setattr(loop, "run_epoch", lambda *a: pytest.fail("an epoch ran"))
    with pytest.raises(ValueError, match=f"--out {run}: the run directory is not writable"):
        train(TrainConfig(resume=str(run), epochs=2, progress=False))
    assert snapshot(run) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_fails_before_training(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="not writable"):
            train(config(run))
    finally:
        run.chmod(0o755)


def test_an_unavailable_backend_leaves_no_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="--backend triton is not available on cpu"):
        train(config(tmp_path / "run", backend="triton"))
    assert not (tmp_path / "run").exists()


def test_absurd_epochs_are_refused():
    with pytest.raises(ValueError, match="epochs must be at most 1000000"):
        TrainConfig(model="vae", epochs=10**20)


# ---------------------------------------------------------------------- item 9: disk full


def test_a_full_disk_says_so_and_the_log_never_runs_ahead(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train(config(run))
    before = snapshot(run)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(rundir.NoSpaceLeft) as info:
        train(TrainConfig(resume=str(run), epochs=2, progress=False))
    assert str(info.value).startswith(f"no space left on device while writing {run}/checkpoint.pt")
    assert snapshot(run) == before, "no temporaries, the log still ends at epoch 1"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 1
    assert "genmodels: no space left on device while writing" in capsys.readouterr().err


def test_the_log_is_written_after_the_checkpoint(tmp_path, monkeypatch):
    order = []
    real_write = rundir.atomic_write

    def write(path, data):
        order.append(os.path.basename(path))
        return real_write(path, data)

    for module in (rundir, loop):
        monkeypatch.setattr(module, "atomic_write", write)
    monkeypatch.setattr("genmodels.training.checkpoint.atomic_write", write)
    monkeypatch.setattr("genmodels.training.images.atomic_write", write)
    train(config(tmp_path / "run", epochs=2))
    assert order[:2] == ["checkpoint.pt", "log.csv"]
    assert order[-1] == "metrics.json"


# ---------------------------------------------------------------------- item 10 and more


def test_checkpoint_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(config(tmp_path / "run"))
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "log.csv", "samples.png", "metrics.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_no_progress_bar_into_a_pipe_and_a_labelled_elapsed_time(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "1", "--out", str(run)]) == 0
    captured = capsys.readouterr()
    assert "batch/s" not in captured.err and "epoch 1/1:" not in captured.err
    assert "elapsed " in captured.out
    assert main(["train", "--resume", str(run), "--epochs", "2", "--progress"]) == 0
    assert "epoch 2/2" in capsys.readouterr().err


def test_the_backend_does_not_leak_into_the_next_run(tmp_path, monkeypatch):
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)
    seen = []
    real_epoch = loop.run_epoch

    def epoch(run, index):
        seen.append(os.environ.get(_backend.ENV_VAR))
        return real_epoch(run, index)

    monkeypatch.setattr(loop, "run_epoch", epoch)
    train(config(tmp_path / "a", backend="reference"))
    assert os.environ.get(_backend.ENV_VAR) is None
    train(config(tmp_path / "b"))
    assert seen == ["reference", None]
    assert (
        load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))["config"]["backend"] == "reference"
    )


def test_samples_only_when_validation_improves_at_most_every_n_epochs(tmp_path, monkeypatch):
    drawn = []
    real_samples = loop._write_samples

    def write_samples(run, model):
        drawn.append(run.state["epoch"])
        time.sleep(0.3)  # the time of the final grid counts in metrics.json's seconds
        return real_samples(run, model)

    monkeypatch.setattr(loop, "_write_samples", write_samples)
    metrics = train(config(tmp_path / "run", epochs=3, sample_every=2))
    log = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))["log"]
    improved = [row["epoch"] for i, row in enumerate(log)
                if all(row["val_elbo_bpd"] < r["val_elbo_bpd"] for r in log[:i])]  # fmt: skip
    expected, last = [], -10
    for e in improved:
        if e - last >= 2:
            expected.append(e)
            last = e
    assert drawn == [*expected, 3]  # the last entry: the final grid of the selected model
    assert metrics["seconds"] >= log[-1]["seconds"] + 0.3
