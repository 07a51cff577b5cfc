"""Sample-quality metrics for GANs in the feature space of a small classifier.

Inception features mean nothing for 8x8 digits, so the package trains its own small
classifier on the training split (fixed seed, deterministic on CPU, cached in memory and
on disk under $GENMODELS_CACHE or ~/.cache/genmodels) and measures:
- `fd`: the Frechet distance between Gaussians fitted to real and generated features;
- `precision`, `recall`: the k-nearest-neighbour manifold estimates of Kynkaanniemi et
  al. (2019), k = 3;
- `classes_covered`: classes that receive at least 1% of the samples' predicted labels,
  and `class_tv`: the total-variation distance of that histogram from uniform.
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genmodels.data import ImageDataset
from genmodels.models._likelihood import to_unit

_CACHE: dict[str, nn.Module] = {}


class Classifier(nn.Module):
    def __init__(self, in_channels: int, levels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.levels = levels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(to_unit(x, self.levels))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _key(data: ImageDataset, epochs: int, seed: int) -> str:
    digest = hashlib.sha256(data.images.numpy().tobytes() + data.labels.numpy().tobytes())
    # v2: the initial weights come from `seed` too (v1 drew them from the caller's RNG).
    return f"classifier-v2-{data.levels}-{epochs}-{seed}-{digest.hexdigest()[:16]}"


def classifier_for(train: ImageDataset, epochs: int = 40, seed: int = 0) -> Classifier:
    """The feature classifier of a training split: trained once, then cached.

    It never touches the caller's random numbers, whether it is trained, read from disk or
    served from memory: a training run draws the same numbers with or without a cache,
    which `--resume` (a fresh process) relies on."""
    key = _key(train, epochs, seed)
    if key in _CACHE:
        return _CACHE[key]
    folder = os.environ.get(
        "GENMODELS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "genmodels")
    )
    path = os.path.join(folder, key + ".pt")
    with torch.random.fork_rng(devices=[]):  # the classifier lives on the CPU
        torch.default_generator.manual_seed(seed)
        model = Classifier(train.shape[0], train.levels, max(train.num_classes, 2))
        fitted = not os.path.isfile(path)
        if fitted:
            _fit(model, train, epochs, seed)
        else:
            model.load_state_dict(torch.load(path, weights_only=True))
    if fitted:
        try:
            from genmodels.training.checkpoint import save_checkpoint

            save_checkpoint(model.state_dict(), path)
        except OSError:
            pass  # a read-only home: the in-memory cache still serves this process
    model.eval().requires_grad_(False)
    _CACHE[key] = model
    return model


@torch.enable_grad()  # first use may come from inside an evaluation under no_grad
def _fit(model: Classifier, train: ImageDataset, epochs: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x_all, y_all = train.images.long(), train.labels
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for i in range(0, len(train), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def features(classifier: Classifier, images: Tensor) -> tuple[Tensor, Tensor]:
    """(features, predicted labels) of integer-level images."""
    feats, preds = [], []
    for i in range(0, len(images), 512):
        f = classifier.features(images[i : i + 512].long())
        feats.append(f.double())
        preds.append(classifier.head(f).argmax(1))
    return torch.cat(feats), torch.cat(preds)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of features [N, D]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((S_a S_b)^(1/2)) = sum of square roots of the eigenvalues of S_a S_b (real, >= 0).
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum()
    return max(float(value), 0.0)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    def radii(x):
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # the 0-distance to itself is the first

    def covered(points, centers, r):
        return (torch.cdist(points, centers) <= r.unsqueeze(0)).any(dim=1).double().mean().item()

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def mode_coverage(predicted: Tensor, num_classes: int, min_share: float = 0.01):
    counts = torch.bincount(predicted, minlength=num_classes).double()
    share = counts / counts.sum()
    covered = int((share >= min_share).sum())
    tv = 0.5 * (share - 1.0 / num_classes).abs().sum().item()
    return covered, tv


def gan_metrics(classifier: Classifier, real: ImageDataset, samples: Tensor) -> dict[str, float]:
    real_f, _ = features(classifier, real.images)
    fake_f, predicted = features(classifier, samples)
    precision, recall = precision_recall(real_f.float(), fake_f.float())
    covered, tv = mode_coverage(predicted, classifier.head.out_features)
    return {
        "fd": frechet_distance(real_f, fake_f),
        "precision": precision,
        "recall": recall,
        "classes_covered": covered,
        "class_tv": tv,
    }
