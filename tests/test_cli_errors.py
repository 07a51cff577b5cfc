"""`genmodels` as an adversarial user meets it: bad flags, unreadable files, Ctrl-C.

Each mistake ends in one `genmodels: error: ...` line (after argparse's usage line) with
exit status 2 and no traceback, before anything is written.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from genmodels import _cli_checks, cli
from genmodels.cli import main
from genmodels.training import load_checkpoint

SMALL_VAE = {"hidden_channels": 8, "latent_dim": 2}


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("usage:") and lines[-1].startswith("genmodels: error: ")
    return lines[-1]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--device", "cuda:x"], "is not a device"),
        (["--seed", str(10**23)], "--seed must be an int from 0 to 4294967295"),
        (["--seed", "-1"], "--seed must be an int from 0"),
        (["--epochs", str(10**20)], "--epochs must be a positive int up to 1000000"),
        (["--epochs", "0"], "--epochs must be a positive int"),
        (["--batch-size", "-3"], "--batch-size must be a positive int"),
        (["--lr", "inf"], "--lr must be a positive finite number"),
        (["--lr", "nan"], "--lr must be a positive finite number"),
        (["--binarize"], "binarize (--binarize) applies to mnist:DIR only, not 'digits'"),
    ],
)
def test_train_bad_flags_are_usage_errors_before_anything_is_written(tmp_path, capsys, argv, words):
    out = tmp_path / "run"
    line = _usage_error(["train", "vae", "--out", str(out), *argv], capsys)
    assert words in line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_device_without_cuda(tmp_path, capsys):
    out = tmp_path / "run"
    line = _usage_error(["train", "vae", "--device", "cuda", "--out", str(out)], capsys)
    assert "--device cuda:" in line and "use --device cpu" in line
    assert not out.exists()


def test_triton_backend_without_gpu_or_interpreter(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    out = tmp_path / "run"
    line = _usage_error(["train", "vae", "--backend", "triton", "--out", str(out)], capsys)
    assert "--backend triton cannot run on cpu" in line and "TRITON_INTERPRET=1" in line
    monkeypatch.setenv("GENMODELS_BACKEND", "triton")
    line = _usage_error(["train", "vae", "--out", str(out)], capsys)
    assert "GENMODELS_BACKEND=triton cannot run on cpu" in line
    monkeypatch.setenv("GENMODELS_BACKEND", "fast")
    line = _usage_error(["train", "vae", "--out", str(out)], capsys)
    assert "GENMODELS_BACKEND=fast: must be one of" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--n", "-5"], "--n must be a positive int up to 100000, got -5"),
        (["--n", "0"], "--n must be a positive int"),
        (["--seed", str(10**23)], "--seed must be an int from 0"),
        (["--truncation", "-1"], "--truncation must be a positive finite number"),
    ],
)
def test_sample_bad_flags(tmp_path, capsys, argv, words):
    grid = tmp_path / "grid.png"
    line = _usage_error(["sample", str(tmp_path), "--out", str(grid), *argv], capsys)
    assert words in line
    assert not grid.exists()


def test_runtime_errors_are_one_line_unless_debugging(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("something in torch failed\n\tsecond line of detail")

    monkeypatch.setattr(cli, "_backends", broken)
    assert main(["backends"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "genmodels: error: something in torch failed second line of detail "
        "(GENMODELS_DEBUG=1 shows the traceback)"
    ]
    monkeypatch.setenv("GENMODELS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something in torch failed"):
        main(["backends"])


def test_bugs_keep_their_traceback(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_backends", broken)
    with pytest.raises(KeyError):
        main(["backends"])


def test_a_real_process_prints_no_traceback(tmp_path):
    cmd = [sys.executable, "-m", "genmodels", "train", "vae", "--device", "foo"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "genmodels: error: --device 'foo' is not a device (expected cpu, cuda or cuda:N)"
    )
    assert os.listdir(tmp_path) == []


# --- unreadable checkpoints --------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    from genmodels.training import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="vae", epochs=1, out=str(run), progress=False, model_kwargs=SMALL_VAE))
    return (run / "checkpoint.pt").read_bytes()


def _damaged(good: bytes) -> dict:
    text_dict = {"model": {"w": torch.ones(2)}, "epoch": 3}
    return {
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "tail cut": (good[:-100], "truncated or corrupt"),
        "text": (b"hello, this is not a checkpoint\n", "not a readable checkpoint"),
        "empty": (b"", "the file is empty"),
        "foreign dict": (text_dict, "missing model_kind, model_config, config, levels"),
        "list": ([torch.ones(1)], "holds a list"),
    }


@pytest.mark.parametrize("case", ["truncated", "tail cut", "text", "empty", "foreign dict", "list"])
def test_unreadable_checkpoints_name_the_path(tmp_path, capsys, checkpoint_bytes, case):
    content, words = _damaged(checkpoint_bytes)[case]
    path = tmp_path / "checkpoint.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=f"^{path}: .*{words}") as info:
        load_checkpoint(str(path))
    assert "\n" not in str(info.value)
    assert "written by `genmodels train`" in str(info.value)
    for command in (["sample", str(path), "--out", str(tmp_path / "g.png")], ["evaluate"]):
        if command == ["evaluate"]:
            command = ["evaluate", str(tmp_path)]  # the run directory form
        line = _usage_error(command, capsys)
        assert line.startswith(f"genmodels: error: {path}: ") and words in line


def test_checkpoint_whose_weights_do_not_fit_its_model(tmp_path, capsys, checkpoint_bytes):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["latent_dim"] = 5
    ckpt["best_model"] = None
    torch.save(ckpt, path)
    line = _usage_error(["sample", str(path), "--out", str(tmp_path / "g.png")], capsys)
    assert line.startswith(f"genmodels: error: {path}: its weights and settings do not make")
    assert "size mismatch" in line


class _Payload:
    """Pickles to a call of os.system: loading it must never run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_never_executed(tmp_path, capsys, checkpoint_bytes):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes)
    ckpt = torch.load(path, weights_only=True)
    ckpt["task"] = _Payload(marker)
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="refused it: .*posix.system"):
        load_checkpoint(str(path))
    line = _usage_error(["evaluate", str(path)], capsys)
    assert f"{path}: not a genmodels checkpoint" in line and "weights_only=True" in line
    line = _usage_error(["train", "vae", "--resume", str(path), "--out", str(tmp_path)], capsys)
    assert "refused it" in line
    assert not marker.exists()


# --- Ctrl-C -------------------------------------------------------------------------------


def test_ctrl_c_during_training_prints_how_to_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genmodels", "train", "vae", "--epochs", "1000",
           "--out", str(out), "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GENMODELS_DEBUG", None)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # blocks until the first epoch is written
            if line.startswith("epoch 1/") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    expected = f"interrupted; resume with: genmodels train --resume {out}"
    assert err.strip().splitlines()[-1] == expected
    assert load_checkpoint(str(out / "checkpoint.pt"))["epoch"] >= 1


def test_ctrl_c_before_the_first_checkpoint(tmp_path):
    class Args:
        command, model, out, resume = "train", "vae", str(tmp_path / "run"), None

    assert _cli_checks.interrupted(Args) == (
        f"interrupted before the first checkpoint; nothing to resume in {tmp_path / 'run'}"
    )
    Args.command = "sample"
    assert _cli_checks.interrupted(Args) == "genmodels: interrupted"
