import json
import math

import pytest
import torch

from genmodels.evaluation import frechet_distance, mode_coverage, precision_recall
from genmodels.models import DCGAN, gan_losses
from genmodels.training import TrainConfig, train
from genmodels.training.restore import restore


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), (64, 3)])
def test_shapes(size, channels):
    torch.manual_seed(0)
    gan = DCGAN(in_channels=channels, image_size=size, levels=256, latent_dim=8, hidden_channels=8)
    z = gan.latents(3)
    images = gan.generator(z)
    assert images.shape == (3, channels, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert gan.discriminator(images).shape == (3,)
    samples = gan.sample(5)
    assert samples.shape == (5, channels, size, size) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() <= 255


def test_truncation_and_interpolation():
    torch.manual_seed(0)
    gan = DCGAN(latent_dim=16, hidden_channels=8)
    z = gan.latents(200, truncation=0.5)
    assert z.abs().max() <= 0.5
    with pytest.raises(ValueError, match="truncation"):
        gan.latents(2, truncation=0.0)
    assert gan.sample(4, truncation=1.0).shape == (4, 1, 8, 8)
    assert gan.interpolate(3, steps=5).shape == (5, 3, 1, 8, 8)


def test_class_conditional():
    torch.manual_seed(0)
    gan = DCGAN(latent_dim=8, hidden_channels=8, num_classes=10)
    y = torch.tensor([1, 7])
    images = gan.generator(gan.latents(2), y)
    assert gan.discriminator(images, y).shape == (2,)
    with pytest.raises(ValueError, match="labels"):
        gan.generator(gan.latents(2))
    assert gan.sample(20).shape == (20, 1, 8, 8)


def test_wgan_critic_has_no_batch_norm():
    gan = DCGAN()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gan.discriminator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in gan.generator.modules())


def test_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(
        gan_losses.critic_loss("wgan-gp", real, fake), fake.mean() - real.mean()
    )
    torch.testing.assert_close(
        gan_losses.critic_loss("hinge", real, fake), torch.tensor((0 + 2 + 1.5 + 0) / 2)
    )
    torch.testing.assert_close(
        gan_losses.critic_loss("minimax", real, fake), sp(-real).mean() + sp(fake).mean()
    )
    torch.testing.assert_close(
        gan_losses.critic_loss("lsgan", real, fake),
        torch.tensor((0.5 * (1 + 4) + 0.5 * (0.25 + 9)) / 2),
    )
    torch.testing.assert_close(gan_losses.generator_loss("non-saturating", fake), sp(-fake).mean())
    torch.testing.assert_close(gan_losses.generator_loss("minimax", fake), -sp(fake).mean())
    torch.testing.assert_close(gan_losses.generator_loss("wgan-gp", fake), -fake.mean())
    torch.testing.assert_close(
        gan_losses.generator_loss("lsgan", fake), torch.tensor((0.25 + 16) / 4)
    )
    with pytest.raises(ValueError, match="loss must be one of"):
        gan_losses.critic_loss("wasserstein", real, fake)


def test_metrics():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, b) < 0.02
    shift = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    assert abs(frechet_distance(a, b + shift) - 5.0) < 0.1
    p, r = precision_recall(a[:500].float(), a[:500].float())
    assert p == 1.0 and r == 1.0
    p, r = precision_recall(a[:500].float(), (a[:500] + 100).float())
    assert p == 0.0 and r == 0.0
    covered, tv = mode_coverage(torch.arange(1000) % 10, 10)
    assert covered == 10 and tv == pytest.approx(0.0)
    covered, tv = mode_coverage(torch.zeros(100, dtype=torch.long), 10)
    assert covered == 1 and tv == pytest.approx(0.9)


@pytest.mark.parametrize("loss", ["wgan-gp", "dragan", "hinge"])
def test_trainer_runs_a_gan(tmp_path, loss):
    cfg = TrainConfig(model="dcgan", epochs=1, loss=loss, out=str(tmp_path), progress=False,
                      model_kwargs={"hidden_channels": 8, "latent_dim": 8})  # fmt: skip
    metrics = train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for key in ("fd", "precision", "recall", "class_tv"):
        assert math.isfinite(metrics[key]), key
    assert metrics["fd"] > 0 and 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    # One epoch of training moved both networks away from their initialisation.
    model, ckpt = restore(str(tmp_path), best=False)
    torch.manual_seed(ckpt["config"]["seed"])
    initial = DCGAN(**ckpt["model_config"])
    for name in ("generator", "discriminator"):
        trained = torch.cat([p.flatten() for p in getattr(model, name).parameters()])
        start = torch.cat([p.flatten() for p in getattr(initial, name).parameters()])
        assert trained.shape == start.shape and not torch.allclose(trained, start), name
    # The coverage numbers are those of the model's own samples, not constants.
    assert 1 <= metrics["classes_covered"] <= 10
    assert metrics["class_tv"] >= (10 - metrics["classes_covered"]) / 10 - 1e-9


def test_loss_option_is_for_gans_only(tmp_path):
    with pytest.raises(ValueError, match="dcgan only"):
        train(TrainConfig(model="vae", epochs=1, loss="hinge", out=str(tmp_path), progress=False))


def test_generator_ema():
    torch.manual_seed(0)
    gan = DCGAN(latent_dim=8, hidden_channels=8, ema_decay=0.75)
    assert gan.sampler is gan.generator_ema
    assert not any(p.requires_grad for p in gan.generator_ema.parameters())
    raw = dict(gan.generator.state_dict())
    for key, value in gan.generator_ema.state_dict().items():
        assert torch.equal(value, raw[key]), key
    old = {k: v.clone() for k, v in gan.generator_ema.state_dict().items()}
    with torch.no_grad():
        for p in gan.generator.parameters():
            p.add_(1.0)
    gan.generator.train()(gan.latents(16))  # moves the batch-norm running statistics
    gan.update_ema()
    new = gan.generator.state_dict()
    for key, value in gan.generator_ema.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * old[key] + 0.25 * new[key])
        else:
            assert torch.equal(value, new[key]), key  # num_batches_tracked
    gan.train()
    assert gan.generator.training and not gan.generator_ema.training
    z = gan.latents(4, generator=torch.Generator().manual_seed(0))
    expected = gan.to_levels(gan.generator_ema(z))
    torch.testing.assert_close(gan.sample(4, generator=torch.Generator().manual_seed(0)), expected)
    assert any(k.startswith("generator_ema.") for k in gan.state_dict())
    plain = DCGAN(latent_dim=8, hidden_channels=8)
    assert plain.generator_ema is None and plain.sampler is plain.generator
    plain.update_ema()  # a no-op
    for bad in (1.0, -0.1, "0.9", True):
        with pytest.raises(ValueError, match="ema_decay"):
            DCGAN(ema_decay=bad)


def test_feature_classifier_leaves_the_callers_rng_alone(tmp_path, monkeypatch):
    from genmodels import evaluation
    from genmodels.data import load

    monkeypatch.setenv("GENMODELS_CACHE", str(tmp_path))
    monkeypatch.setattr(evaluation, "_CACHE", {})
    train_split = load("digits").train
    torch.manual_seed(123)
    state = torch.get_rng_state()
    fitted = evaluation.classifier_for(train_split, epochs=1)  # trained and written to disk
    assert torch.equal(torch.get_rng_state(), state)
    assert evaluation.classifier_for(train_split, epochs=1) is fitted  # from memory
    monkeypatch.setattr(evaluation, "_CACHE", {})
    loaded = evaluation.classifier_for(train_split, epochs=1)  # from disk
    assert torch.equal(torch.get_rng_state(), state)
    for key, value in fitted.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    torch.manual_seed(7)  # the caller's RNG does not decide the classifier either
    monkeypatch.setenv("GENMODELS_CACHE", str(tmp_path / "other"))
    monkeypatch.setattr(evaluation, "_CACHE", {})
    again = evaluation.classifier_for(train_split, epochs=1)
    for key, value in fitted.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_trainer_resumes_a_gan_exactly(tmp_path, monkeypatch):
    # The resumed run must restore the critic-step count (it decides which steps train the
    # generator) as well as the weights, the optimizers and the generator average; with a
    # cold in-memory classifier cache, as in a fresh process, it must draw the same numbers.
    from genmodels import evaluation

    monkeypatch.setattr(evaluation, "_CACHE", {})
    small = {"hidden_channels": 8, "latent_dim": 8}

    def cfg(name, epochs, resume=None):
        out = str(tmp_path / name)
        return TrainConfig(model="dcgan", epochs=epochs, out=out, resume=resume, progress=False,
                           model_kwargs=small)  # fmt: skip

    straight = train(cfg("straight", 2))
    train(cfg("interrupted", 1))
    resumed = train(cfg("interrupted", 2, resume=str(tmp_path / "interrupted")))
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "checkpoint.pt", weights_only=True)
    assert a["model_config"]["ema_decay"] is not None
    assert any(k.startswith("generator_ema.") for k in a["model"])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["task"] == b["task"] == {"steps": 32}
    assert [r["train_loss"] for r in a["log"]] == [r["train_loss"] for r in b["log"]]
    assert {"val_score", "val_fd", "val_class_tv", "val_classes_covered"} <= set(a["log"][0])
    assert straight == {**resumed, "seconds": straight["seconds"]}
