"""genmodels adapt: networks, the four methods on the training loop, resume, selection
without target labels, the command line and its errors, compare, DDP."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from genmodels import _critic_chain
from genmodels.adapt.adda import ADDATask
from genmodels.adapt.augment import default_shift, random_shift
from genmodels.adapt.confusion import confusion_loss
from genmodels.adapt.grad_reverse import ganin_lambda
from genmodels.adapt.run import METHODS, AdaptConfig, adapt, compare
from genmodels.cli import main
from genmodels.data import datasets
from genmodels.models.adapt import AdaptNet, DomainDiscriminator, LeNetEncoder, SmallEncoder
from genmodels.training import load_checkpoint, loop

SOURCE = "synth-digits:train=160,val=40,test=40"


def config(tmp_path, method, name=None, **kw):
    base = dict(method=method, source=SOURCE, epochs=2, pretrain_epochs=1, batch_size=32,
                out=str(tmp_path / (name or method)), progress=False)  # fmt: skip
    if method == "source-only":
        base.pop("pretrain_epochs")
        base["epochs"] = 1
    return AdaptConfig(**{**base, **kw})


# --- networks ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32])
def test_lenet_encoder(size):
    enc = LeNetEncoder(1, size, 256)
    x = torch.randint(0, 256, (3, 1, size, size))
    assert enc(x).shape == (3, 500)
    assert torch.equal(enc.eval()(x), enc(x.float() * (2 / 255) - 1))  # levels -> [-1, 1]


def test_small_encoder_and_the_default_per_size():
    assert SmallEncoder()(torch.randint(0, 17, (2, 1, 8, 8))).shape == (2, 128)
    assert AdaptNet(image_size=8).encoder_kind == "small"
    assert AdaptNet(image_size=28, levels=256).encoder_kind == "lenet"
    with pytest.raises(ValueError, match="encoder must be one of"):
        AdaptNet(encoder="resnet")
    with pytest.raises(ValueError, match="at least 16x16"):
        AdaptNet(image_size=8, encoder="lenet")
    with pytest.raises(RuntimeError, match=r"x must be \[B, 1, 8, 8\]"):
        SmallEncoder()(torch.zeros(2, 1, 16, 16, dtype=torch.long))


def test_discriminator_is_the_papers_mlp_and_a_piecewise_linear_chain():
    d = DomainDiscriminator(128)
    widths = [(m.in_features, m.out_features) for m in d if isinstance(m, torch.nn.Linear)]
    assert widths == [(128, 500), (500, 500), (500, 1)]
    assert _critic_chain.chain_of(d) is not None  # gradient_penalty(method="auto") goes first-order


def test_ganin_schedule_and_confusion_loss():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert ganin_lambda(0.25) < ganin_lambda(0.5) < ganin_lambda(1.0) < 1
    logits = torch.zeros(5, requires_grad=True)
    assert confusion_loss(logits).item() == pytest.approx(math.log(2))  # uniform: the minimum
    (g,) = torch.autograd.grad(confusion_loss(logits), logits)
    assert torch.all(g == 0)
    assert confusion_loss(torch.full((5,), 3.0)) > confusion_loss(torch.full((5,), 0.5))


# --- runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_a_run_directory(tmp_path, method):
    metrics = adapt(config(tmp_path, method))
    run = tmp_path / method
    assert {"checkpoint.pt", "log.csv", "metrics.json", "features.png"} <= set(os.listdir(run))
    assert "samples.png" not in os.listdir(run)
    written = json.loads((run / "metrics.json").read_text())
    assert written == metrics
    for key in ("target_accuracy", "source_accuracy", "seconds", "method", "source", "target"):
        assert key in written
    assert written["method"] == method and written["source"] == SOURCE
    assert written["target"] == "digits"
    assert 0 <= written["target_accuracy"] <= 1 and 0 <= written["source_accuracy"] <= 1
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))  # weights_only
    assert ckpt["model_kind"] == f"adapt-{method}"
    if method != "source-only":
        assert ckpt["stage"] == "adapt" and ckpt["task"]["before"]["points"].shape == (40 + 447, 2)
        header = (run / "log.csv").read_text().splitlines()[0]
        assert "val_domain_accuracy" in header and "stage" in header


@pytest.mark.parametrize("adversary", ["lsgan", "wgan-gp"])
def test_adda_adversaries(tmp_path, adversary):
    metrics = adapt(config(tmp_path, "adda", adversary=adversary))
    assert math.isfinite(metrics["target_accuracy"])
    ckpt = load_checkpoint(str(tmp_path / "adda" / "checkpoint.pt"))
    assert ckpt["config"]["model_kwargs"]["adversary"] == adversary


def test_adda_wgan_gp_takes_the_first_order_penalty(tmp_path, monkeypatch):
    import genmodels.adapt.adda as adda_module

    methods = []
    real = adda_module.gradient_penalty

    def spy(D, *args, **kwargs):
        methods.append(("chain" if _critic_chain.chain_of(D) else "other", kwargs["method"]))
        return real(D, *args, **kwargs)

    monkeypatch.setattr(adda_module, "gradient_penalty", spy)
    adapt(config(tmp_path, "adda", adversary="wgan-gp"))
    assert methods and set(methods) == {("chain", "auto")}


def test_confusion_weight(tmp_path, monkeypatch):
    import genmodels.adapt.confusion as confusion_module

    seen = []
    real = confusion_module.confusion_loss

    def spy(logits):
        loss = real(logits)
        seen.append(loss.item())
        return loss

    monkeypatch.setattr(confusion_module, "confusion_loss", spy)
    adapt(config(tmp_path, "confusion", name="w", confusion_weight=0.25))
    ckpt = load_checkpoint(str(tmp_path / "w" / "checkpoint.pt"))
    assert ckpt["config"]["model_kwargs"]["confusion_weight"] == 0.25
    log = (tmp_path / "w" / "log.csv").read_text().splitlines()
    header, last = log[0].split(","), log[-1].split(",")
    # train_loss is the mean of class loss + 0.25 * confusion over the epoch's steps.
    assert seen and float(last[header.index("train_loss")]) > 0.25 * min(seen)
    # Weight 0: the encoder and classifier learn the source labels only, so the run equals
    # one whose confusion term is replaced by zero.
    monkeypatch.setattr(confusion_module, "confusion_loss", lambda logits: real(logits) * 0)
    adapt(config(tmp_path, "confusion", name="zeroed"))
    monkeypatch.setattr(confusion_module, "confusion_loss", real)
    adapt(config(tmp_path, "confusion", name="w0", confusion_weight=0.0))
    a = load_checkpoint(str(tmp_path / "zeroed" / "checkpoint.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "w0" / "checkpoint.pt"))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--confusion-weight must be a finite number >= 0"):
            adapt(config(tmp_path, "confusion", name="bad", confusion_weight=bad, overwrite=True))


def test_adda_target_encoder_starts_as_the_source_encoder(tmp_path):
    adapt(config(tmp_path, "adda", epochs=2))
    ckpt = load_checkpoint(str(tmp_path / "adda" / "checkpoint.pt"))
    model = AdaptNet(**ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    # After adaptation they differ (untied), and the source encoder stayed as pretrained.
    source = dict(model.encoder.named_parameters())
    target = dict(model.target_encoder.named_parameters())
    assert any(not torch.equal(source[k], target[k]) for k in source)


@pytest.mark.parametrize("method, interrupt_at", [("adda", 2), ("adda", 1), ("grad-reverse", 2)])
def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, method, interrupt_at):
    # Interrupted inside the adversarial stage (after epoch 2 of 3) and at the boundary
    # between the stages (after the pretraining epoch).
    adapt(config(tmp_path, method, "straight", epochs=3))
    real_epoch = loop.run_epoch

    def interrupted(run, epoch):
        if epoch == interrupt_at:
            raise KeyboardInterrupt
        return real_epoch(run, epoch)

    monkeypatch.setattr(loop, "run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adapt(config(tmp_path, method, "interrupted", epochs=3))
    monkeypatch.undo()
    resumed = adapt(AdaptConfig(resume=str(tmp_path / "interrupted"), progress=False))
    a = load_checkpoint(str(tmp_path / "straight" / "checkpoint.pt"))
    b = load_checkpoint(str(tmp_path / "interrupted" / "checkpoint.pt"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for name in a["optimizers"]:
        for pa, pb in zip(a["optimizers"][name]["state"].values(),
                          b["optimizers"][name]["state"].values(), strict=True):  # fmt: skip
            assert torch.equal(pa["exp_avg"], pb["exp_avg"]), name
    assert [r["train_loss"] for r in a["log"]] == [r["train_loss"] for r in b["log"]]
    assert torch.equal(a["task"]["before"]["points"], b["task"]["before"]["points"])
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert straight["target_accuracy"] == resumed["target_accuracy"]


@pytest.mark.parametrize("method", ["source-only", "adda"])
def test_no_target_labels_reach_training_or_selection(tmp_path, monkeypatch, method):
    """Scrambling the target's training and validation labels changes nothing: the runs
    are identical up to the final test accuracy."""
    adapt(config(tmp_path, method, "true-labels"))
    real_load = datasets.load

    def scrambled(spec, **kwargs):
        splits = real_load(spec, **kwargs)
        if spec == "digits":
            for part in (splits.train, splits.val):
                g = torch.Generator().manual_seed(1)
                part.labels = torch.randint(0, 10, part.labels.shape, generator=g)
        return splits

    monkeypatch.setattr(datasets, "load", scrambled)
    monkeypatch.setattr(loop, "load", scrambled)
    adapt(config(tmp_path, method, "scrambled"))
    a = load_checkpoint(str(tmp_path / "true-labels" / "checkpoint.pt"))
    b = load_checkpoint(str(tmp_path / "scrambled" / "checkpoint.pt"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["best_epoch"] == b["best_epoch"]
    assert [r.get("val_domain_accuracy") for r in a["log"]] == [
        r.get("val_domain_accuracy") for r in b["log"]
    ]


def _shifts_of(batch, images):
    """The (dy, dx) that maps each image of `images` onto `batch` (zero fill), or None."""
    found = []
    for x, y in zip(images, batch, strict=True):
        match = None
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                moved = torch.roll(F.pad(x, (1, 1, 1, 1)), (dy, dx), (1, 2))[:, 1:-1, 1:-1]
                if torch.equal(moved, y):
                    match = (dy, dx)
        found.append(match)
    return found


def test_random_shift_translates_each_image_with_zero_fill():
    images = torch.randint(1, 17, (64, 2, 8, 8), dtype=torch.uint8)
    shifted = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert shifted.dtype == images.dtype and shifted.shape == images.shape
    shifts = _shifts_of(shifted, images)
    assert None not in shifts and len(set(shifts)) == 9  # per image, every offset drawn
    again = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
    assert random_shift(images, 0, torch.Generator()) is images
    assert random_shift(images[:0], 1, torch.Generator()).shape == (0, 2, 8, 8)
    assert default_shift(8) == 1 and default_shift(28) == 3 and default_shift(4) == 1


@pytest.mark.parametrize("shift", [None, 0])
def test_source_batches_are_shifted_only_while_the_source_model_trains(shift):
    options = {} if shift is None else {"source_shift": shift}
    task = ADDATask(datasets.load(SOURCE), options, target=datasets.load("digits"))
    task.current_stage = "pretrain"
    images = task.splits.train.images

    def first_batch(stage):
        task.current_stage = stage
        g = torch.Generator().manual_seed(3)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(3))
        x_s, _, _ = next(task.epoch_batches(0, 0, 1, g, 32, torch.device("cpu")))
        return x_s, images[order[:32]].long()

    x_s, raw = first_batch("pretrain")
    moved = [s for s in _shifts_of(x_s, raw) if s != (0, 0)]
    assert (len(moved) > 10) == (shift is None)
    x_s, raw = first_batch("adapt")
    assert torch.equal(x_s, raw)


def test_selection_rules(tmp_path):
    adapt(config(tmp_path, "source-only", epochs=2))
    ckpt = load_checkpoint(str(tmp_path / "source-only" / "checkpoint.pt"))
    best = max(ckpt["log"], key=lambda r: r["val_source_accuracy"])
    assert ckpt["best_epoch"] == best["epoch"]  # the best source validation accuracy
    adapt(config(tmp_path, "confusion", epochs=3))
    ckpt = load_checkpoint(str(tmp_path / "confusion" / "checkpoint.pt"))
    assert ckpt["best_model"] is None  # the last iterate


# --- the command line -----------------------------------------------------------------


def _usps_folder(tmp_path, classes=10):
    import bz2

    folder = tmp_path / "usps"
    folder.mkdir()
    for name, n in (("usps", 30), ("usps.t", 10)):
        lines = [f"{i % classes + 1} " + " ".join(f"{j + 1}:0.5" for j in range(256))
                 for i in range(n)]  # fmt: skip
        (folder / f"{name}.bz2").write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    return folder


@pytest.mark.parametrize(
    "argv, words",
    [
        (["adapt", "cyclegan"], "invalid choice"),
        (["adapt", "adda", "--source", "digits"], "same data set"),
        (["adapt", "adda", "--source", "synth-digits", "--target", "synth-digits"], "same data"),
        (["adapt", "confusion", "--adversary", "lsgan"], "--adversary applies to adda only"),
        (["adapt", "adda", "--adversary", "hinge"], "invalid choice"),
        (["adapt", "adda", "--confusion-weight", "0.5"], "--confusion-weight applies to"),
        (
            ["adapt", "adda", "--source", SOURCE, "--epochs", "3", "--pretrain-epochs", "3"],
            "no adaptation epochs",
        ),  # fmt: skip
        (["adapt", "adda", "--encoder", "vgg"], "invalid choice"),
        (["adapt", "adda", "--source", SOURCE, "--source-shift", "-1"], "--source-shift"),
        (["adapt"], "give a method, or --resume"),
        (["adapt", "adda", "--source", "mnist:/nonexistent"], "/nonexistent"),
    ],
)
def test_cli_bad_input_before_training(tmp_path, argv, words, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out), "--no-progress"])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "usage" in err and words in err
    assert not out.exists()  # nothing trained, no run directory


def test_cli_different_sizes_need_image_size(tmp_path, capsys):
    usps = _usps_folder(tmp_path)
    out = tmp_path / "run"
    argv = ["adapt", "adda", "--source", SOURCE, "--target", f"usps:{usps}", "--out", str(out)]
    with pytest.raises(SystemExit):
        main([*argv, "--no-progress"])
    assert "--image-size" in capsys.readouterr().err and not out.exists()
    # With --image-size both are resized and the run goes through.
    argv += ["--image-size", "12", "--epochs", "2", "--pretrain-epochs", "1", "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == f"usps:{usps}"
    assert load_checkpoint(str(out / "checkpoint.pt"))["model_config"]["image_size"] == 12


def test_cli_target_with_other_classes(tmp_path, capsys):
    usps = _usps_folder(tmp_path, classes=5)
    out = tmp_path / "run"
    argv = ["adapt", "adda", "--source", SOURCE, "--target", f"usps:{usps}",
            "--image-size", "8", "--out", str(out), "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit):
        main(argv)
    assert "same classes" in capsys.readouterr().err and not out.exists()


def test_cli_resume_keeps_the_runs_settings(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["adapt", "adda", "--source", SOURCE, "--pretrain-epochs", "1", "--out", str(run),
            "--batch-size", "32", "--no-progress"]  # fmt: skip
    assert main([*base, "--epochs", "2"]) == 0
    with pytest.raises(SystemExit):
        main(["adapt", "--resume", str(run), "--adversary", "lsgan"])
    assert "keeps its own settings" in capsys.readouterr().err
    assert main(["adapt", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


def test_compare_writes_the_table(tmp_path):
    base = AdaptConfig(source=SOURCE, epochs=2, pretrain_epochs=1, batch_size=32, progress=False)
    results = compare(base, seeds=2, out=str(tmp_path / "cmp"))
    assert list(results) == list(METHODS) and all(len(v) == 2 for v in results.values())
    text = (tmp_path / "cmp" / "table.md").read_text()
    assert f"| method | {SOURCE} -> digits | per seed |" in text
    for method, values in results.items():
        t = torch.tensor(values, dtype=torch.float64)
        assert f"| {method} | {t.mean():.3f} +- {t.std():.3f} |" in text
    # Source only trains for the others' pretraining epochs; a second call reads back.
    so = json.loads((tmp_path / "cmp" / "source-only-seed0" / "metrics.json").read_text())
    assert so["epochs"] == 1
    assert compare(base, seeds=2, out=str(tmp_path / "cmp")) == results


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", "29541", "-m", "genmodels", "adapt", "adda", "--source", SOURCE,
           "--epochs", "2", "--pretrain-epochs", "1", "--batch-size", "16",
           "--adversary", "wgan-gp", "--out", str(run), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["method"] == "adda"
    assert (run / "features.png").stat().st_size > 0
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))
    # Each rank took half of the 160 source images per epoch: 5 steps of 16.
    assert ckpt["task"]["steps"] == 5
