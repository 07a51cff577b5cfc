"""What the four adaptation methods share, as a Task of the genmodels training loop.

The loop (genmodels.training.loop) owns the run directory, checkpoints, resume, DDP, NaN
stops, logging and progress; a task here owns the two domains' batches, its stages and
its steps:

- stage "pretrain" (the first ``pretrain_epochs`` epochs; all of a source-only run, whose
  one stage is "train"): the encoder and label classifier learn the source labels;
- stage "adapt" (the remaining epochs): the method's own step on a source batch with its
  labels and a target batch without labels.

An epoch is one pass over the source training split (shuffled, sharded across DDP ranks);
each source batch is paired with a target batch of the same size, drawn from shuffled
passes over the target training split. Target labels are never read in training, in
validation or in model selection: they are read once, for ``target_accuracy`` on the
target test split at the end.

Options (the run's ``model_kwargs``, checkpointed with it): ``encoder`` ("lenet" or
"small", default by image size), ``image_size``, ``grayscale``, ``source_size``,
``target_size`` (genmodels.adapt.domains), ``pretrain_epochs``, ``source_shift`` (the
random translation of the labelled source images during the source stage, in pixels:
genmodels.adapt.augment; default one pixel per 8 of the image side, 0 turns it off) and,
for ADDA, ``adversary``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.adapt import domains
from genmodels.adapt.augment import default_shift, random_shift
from genmodels.data import Splits
from genmodels.models.adapt import AdaptNet, default_encoder
from genmodels.training.tasks import Task, _step

DATA_OPTIONS = ("image_size", "grayscale", "source_size", "target_size")


def _int_option(value, name, minimum=1):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"--{name.replace('_', '-')} must be a {kind} int, got {value!r}")
    return value


@torch.no_grad()
def predict(encoder, classifier, images: torch.Tensor, device, batch: int = 1024) -> torch.Tensor:
    out = [classifier(encoder(images[i : i + batch].to(device).long())).argmax(1).cpu()
           for i in range(0, len(images), batch)]  # fmt: skip
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def features(encoder, images: torch.Tensor, device, batch: int = 1024) -> torch.Tensor:
    out = [encoder(images[i : i + batch].to(device).long()).float().cpu()
           for i in range(0, len(images), batch)]  # fmt: skip
    return torch.cat(out)


def accuracy(encoder, classifier, data, device) -> float:
    if len(data) == 0:
        return float("nan")
    return (predict(encoder, classifier, data.images, device) == data.labels).float().mean().item()


def pca_2d(points: torch.Tensor) -> torch.Tensor:
    """Projection of `points` [N, D] onto their first two principal components (float64)."""
    x = points.double()
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    basis = v[:2].T
    # A fixed sign per axis (largest loading positive), so pictures do not flip at random.
    basis = basis * torch.sign(basis[basis.abs().argmax(0), torch.arange(basis.shape[1])])
    return x @ basis


class AdaptTask(Task):
    """The shared part; subclasses set `name`, `method`, `adapt_step` and their optimizers."""

    method: str
    takes_target = True
    higher_is_better = True
    default_lr = 1e-3
    default_pretrain_epochs = 4
    default_epochs = 10
    model_class = AdaptNet
    stages = ("pretrain", "adapt")
    separate_target = False
    # The adversarial stage's learning rate is this fraction of --lr (the pretraining one).
    adapt_lr_ratio = 1.0
    # Last iterate (no target labels to select with); source-only overrides it.
    selection_metric: str | None = None
    sample = None  # a classifier draws no samples
    extra_options: tuple[str, ...] = ()

    def __init__(self, splits: Splits, model_kwargs: dict, loss=None, target=None):
        if target is None:
            raise ValueError(f"{self.name}: adaptation needs a target data set (--target)")
        options = dict(model_kwargs)
        known = ("encoder", "pretrain_epochs", "source_shift", *DATA_OPTIONS,
                 *self.extra_options)  # fmt: skip
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{self.name}: unknown options {unknown} (known: {list(known)})")
        for name in ("image_size", "source_size", "target_size", "pretrain_epochs"):
            _int_option(options.get(name), name)
        shift = _int_option(options.get("source_shift"), "source_shift", minimum=0)
        source, target = domains.make_pair(
            splits, target, **{k: options[k] for k in DATA_OPTIONS if options.get(k) is not None}
        )
        super().__init__(source, {}, loss=loss, target=target)
        self.options = options
        image_size = source.train.shape[1]
        self.encoder_kind = options.get("encoder") or default_encoder(image_size)
        self.pretrain_epochs = options.get("pretrain_epochs") or self.default_pretrain_epochs
        self.source_shift = default_shift(image_size) if shift is None else shift
        self.num_classes = max(int(source.train.labels.max()), int(target.test.labels.max())) + 1
        self.steps = 0  # adversarial steps taken (schedules)
        self.epochs = None
        self.before: dict | None = None  # PCA of the test features before adaptation
        self.model: AdaptNet | None = None

    # --- model and optimizers -------------------------------------------------------------

    def model_config(self) -> dict:
        return {**self.data_kwargs(), "num_classes": self.num_classes,
                "encoder": self.encoder_kind, "separate_target": self.separate_target}  # fmt: skip

    def build_model(self) -> nn.Module:
        self.model = super().build_model()
        return self.model

    def source_parameters(self, model):
        return [*model.encoder.parameters(), *model.classifier.parameters()]

    def optimizers(self, model, lr):
        return {"source": torch.optim.Adam(self.source_parameters(model), lr=lr)}

    def wrap(self, model, device):
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.Module()
        for name in ("encoder", "classifier", "domain", "target_encoder"):
            module = getattr(model, name)
            if module is not None:
                setattr(wrapped, name, nn.parallel.DistributedDataParallel(module, device_ids=ids))
        return wrapped

    # --- stages and schedules ------------------------------------------------------------

    def stage(self, epoch: int, epochs: int) -> str:
        if epochs <= self.pretrain_epochs:
            raise ValueError(
                f"{self.name}: --epochs {epochs} leaves no adaptation epochs after the "
                f"{self.pretrain_epochs} pretraining epochs (--pretrain-epochs)"
            )
        self.epochs = epochs
        return "pretrain" if epoch < self.pretrain_epochs else "adapt"

    def adapt_steps_total(self) -> int:
        return (self.epochs - self.pretrain_epochs) * self._steps_per_epoch

    def learning_rate(self, base, epoch, epochs):
        return base if epoch < self.pretrain_epochs else base * self.adapt_lr_ratio

    def begin_epoch(self, epoch, stage):
        super().begin_epoch(epoch, stage)
        if stage == "adapt" and self.before is None and self.model is not None:
            self.start_adaptation(self.model)
            self.before = self.feature_picture(self.model)

    def start_adaptation(self, model) -> None:
        """Called once, before the first adaptation epoch (also when resuming right there)."""

    def state_dict(self):
        return {"steps": self.steps, "before": self.before}

    def load_state_dict(self, state):
        self.steps = int(state.get("steps", 0))
        self.before = state.get("before")

    # --- batches -------------------------------------------------------------------------

    def num_batches(self, world, batch_size):
        return math.ceil((len(self.splits.train) // world) / batch_size)

    def epoch_batches(self, epoch, rank, world, generator, batch_size, device):
        source, target = self.splits.train, self.target.train
        per_rank = len(source) // world
        self._steps_per_epoch = self.num_batches(world, batch_size)
        order = torch.randperm(len(source), generator=generator)[rank::world][:per_rank]
        adapting = self.current_stage == "adapt"
        if adapting:
            passes = math.ceil(world * per_rank / len(target))
            drawn = torch.cat([torch.randperm(len(target), generator=generator)
                               for _ in range(passes)])  # fmt: skip
            target_order = drawn[rank::world][:per_rank]
        for i in range(0, per_rank, batch_size):
            index = order[i : i + batch_size]
            x_s = source.images[index]
            if not adapting:
                x_s = random_shift(x_s, self.source_shift, generator)
            x_s = x_s.to(device).long()
            y_s = source.labels[index].to(device)
            x_t = None
            if adapting:
                x_t = target.images[target_order[i : i + batch_size]].to(device).long()
            yield x_s, y_s, x_t

    # --- steps ---------------------------------------------------------------------------

    def train_step(self, net, model, batch, optimizers, scaler, amp):
        x_s, y_s, x_t = batch
        if x_t is None:
            loss = F.cross_entropy(net.classifier(net.encoder(x_s)), y_s)
            _step(loss, optimizers["source"], None)
            return {"loss": loss.item()}
        stats = self.adapt_step(net, model, x_s, y_s, x_t, optimizers)
        self.steps += 1
        return stats

    def adapt_step(self, net, model, x_s, y_s, x_t, optimizers) -> dict[str, float]:
        raise NotImplementedError

    # --- validation and evaluation -------------------------------------------------------

    def target_encoder(self, model):
        return model.target_encoder if model.target_encoder is not None else model.encoder

    @torch.no_grad()
    def domain_accuracy(self, model, device) -> float:
        """How well the domain classifier tells source validation features from target
        validation features (0.5: indistinguishable). Uses no labels."""
        s = features(model.encoder, self.splits.val.images, device)
        t = features(self.target_encoder(model), self.target.val.images, device)
        right = (model.domain(s.to(device)) > 0).sum() + (model.domain(t.to(device)) <= 0).sum()
        return right.item() / (len(s) + len(t))

    def validate(self, model, data, device):
        scores = {"val_source_accuracy": accuracy(model.encoder, model.classifier, data, device)}
        if self.current_stage == "adapt":
            scores["val_domain_accuracy"] = self.domain_accuracy(model, device)
        return scores

    def evaluate(self, model, data, device):
        return {
            "target_accuracy": accuracy(
                self.target_encoder(model), model.classifier, self.target.test, device
            ),
            "source_accuracy": accuracy(model.encoder, model.classifier, data, device),
            "method": self.method,
        }

    def feature_picture(self, model) -> dict:
        """Test features of both domains projected to 2-D (one PCA for both), with their
        domains (1 = source) and classes: one row of features.png."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        s = features(model.encoder, self.splits.test.images, device)
        t = features(self.target_encoder(model), self.target.test.images, device)
        model.train(was_training)
        return {
            "points": pca_2d(torch.cat([s, t])).float(),
            "domain": torch.cat([torch.ones(len(s)), torch.zeros(len(t))]).to(torch.int64),
            "labels": torch.cat([self.splits.test.labels, self.target.test.labels]),
        }
