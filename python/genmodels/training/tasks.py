"""What training, validation, evaluation and sampling mean for each model.

The loop in training/loop.py is model-agnostic: it owns the run directory (lock,
checkpoints, logs, samples, metrics), resume, DDP, the learning-rate schedule, NaN stops,
model selection and progress. A task owns everything about the model and its data:

- `Task(splits, model_kwargs, loss=None, target=None)`: `splits` are the train/val/test
  splits of `--data`; `target` those of a second data set (`TrainConfig.target_data`), or
  None. A task that uses one sets `takes_target = True`; the others refuse it.
- `build_model()`, `model_config()` (the model class's keyword arguments, checkpointed so
  `genmodels sample` rebuilds the model), `optimizers(model, lr)` -> {name: optimizer}
  (every one is checkpointed and its learning rate set each epoch), `wrap(model, device)`
  (the module `train_step` calls under DDP).
- Stages: `stages` names them in order and `stage(epoch, epochs)` says which one an epoch
  (0-based) belongs to; `begin_epoch(epoch, stage)` is called before each epoch, also on
  resume (a pure function of the epoch, so a resumed run takes the same path). The
  selection metric is compared within the current stage only: the best model of the last
  stage is the one evaluated at the end. One stage, "train", by default.
- `epoch_batches(epoch, rank, world, generator, batch_size, device)` yields what
  `train_step` takes, in the order given by `generator` (seeded from the run's seed and the
  epoch, so a resumed epoch sees the same batches); every rank must yield the same number
  of batches. `num_batches(world, batch_size)` is their count (for the progress bar). By
  default: a shuffled pass over `splits.train` as `(images, labels)` batches, images as
  integer levels.
- `train_step(net, model, batch, optimizers, scaler, amp)` -> {"loss": float, ...}: one
  update. A non-finite "loss" stops the run.
- `validate(model, data, device)` -> the selection metric on `data` (`splits.val`), or a
  dict of logged scores holding it under `selection_metric`; `higher_is_better` says which
  way is better (lower by default). `selection_metric = None`: no selection, the last
  iterate is evaluated.
- `evaluate(model, data, device)` -> final test metrics (`splits.test`) for metrics.json.
- `sample(model, n)` -> integer-level images [n, C, H, W] for samples.png; a task whose
  model does not generate sets `sample = None` and no samples.png is written.
- `learning_rate(base, epoch, epochs)`; `schedule_depends_on_total = True` when it uses
  `epochs` (then a resumed run cannot change `--epochs`).
- `state_dict()` / `load_state_dict(state)`: task state outside the model and the
  optimizers (step counters, stage bookkeeping), checkpointed every epoch.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.data import ImageDataset, Splits
from genmodels.gan import gradient_penalty
from genmodels.models import DCGAN, VAE, GatedPixelCNN, PixelCNN, PixelRNN, gan_losses
from genmodels.models._likelihood import bits_per_dim


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


class Task:
    name: str
    default_epochs: int
    default_lr: float
    selection_metric: str | None
    higher_is_better: bool = False
    stages: tuple[str, ...] = ("train",)
    takes_target: bool = False
    schedule_depends_on_total: bool = False

    def __init__(
        self,
        splits: Splits,
        model_kwargs: dict,
        loss: str | None = None,
        target: Splits | None = None,
    ):
        if loss is not None:
            raise ValueError(f"--loss applies to dcgan only, not {self.name}")
        if target is not None and not self.takes_target:
            raise ValueError(f"{self.name} trains on one data set: it takes no target data")
        self.splits = splits
        self.target = target
        self.model_kwargs = model_kwargs
        self.current_stage = self.stages[0]

    def stage(self, epoch: int, epochs: int) -> str:
        """The stage that epoch `epoch` (0-based) of `epochs` belongs to."""
        return self.stages[0]

    def begin_epoch(self, epoch: int, stage: str) -> None:
        self.current_stage = stage

    def num_batches(self, world: int, batch_size: int) -> int:
        return math.ceil((len(self.splits.train) // world) / batch_size)

    def epoch_batches(self, epoch, rank, world, generator, batch_size, device):
        """Today's image batches: a shuffled pass over the training split, cut so that
        every rank takes the same number of steps."""
        data = self.splits.train
        per_rank = len(data) // world
        order = torch.randperm(len(data), generator=generator)[rank::world][:per_rank]
        for i in range(0, per_rank, batch_size):
            index = order[i : i + batch_size]
            yield data.images[index].to(device).long(), data.labels[index].to(device)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module whose forward the training step calls, under DistributedDataParallel."""
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def data_kwargs(self) -> dict:
        c, h, w = self.splits.train.shape
        if h != w:
            raise ValueError(f"models take square images, the data has {h}x{w}")
        return {"in_channels": c, "image_size": h, "levels": self.splits.levels}

    model_class: type[nn.Module]

    def model_config(self) -> dict:
        """Keyword arguments of the model class: the data's shape, then the user's."""
        return {**self.data_kwargs(), **self.model_kwargs}

    def build_model(self) -> nn.Module:
        return self.model_class(**self.model_config())

    def optimizers(self, model: nn.Module, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.Adam(model.parameters(), lr=lr)}

    def learning_rate(self, base: float, epoch: int, epochs: int) -> float:
        """The learning rate of epoch `epoch` (0-based) of `epochs`: constant by default."""
        return base

    def train_step(self, net, model, batch, optimizers, scaler, amp: bool) -> dict[str, float]:
        raise NotImplementedError

    def validate(self, model, data: ImageDataset, device) -> float | dict[str, float]:
        """The selection metric on the validation split, or a dict of logged scores that
        holds it under `selection_metric`."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Training state the task keeps outside the model and optimizers (checkpointed)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def evaluate(self, model, data: ImageDataset, device) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, model, n: int, **kwargs) -> torch.Tensor | None:
        return model.sample(n, **kwargs)


def batches(data: ImageDataset, batch_size: int, device, labels: bool = False):
    for i in range(0, len(data), batch_size):
        x = data.images[i : i + batch_size].to(device).long()
        yield (x, data.labels[i : i + batch_size].to(device)) if labels else x


def _step(loss, optimizer, scaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


class VAETask(Task):
    name = "vae"
    default_epochs = 40
    default_lr = 2e-3
    selection_metric = "val_elbo_bpd"
    model_class = VAE

    def train_step(self, net, model, batch, optimizers, scaler, amp):
        x = batch[0]
        with autocast(x.device, amp):
            _, log_px, kl = net(x)
            loss = (model.beta * kl - log_px).mean()
        _step(loss, optimizers["model"], scaler)
        return {"loss": loss.item(), "kl": kl.mean().item()}

    @torch.no_grad()
    def validate(self, model, data, device) -> float:
        total = sum(model.elbo(x).sum().item() for x in batches(data, 256, device))
        return bits_per_dim(torch.tensor(-total / len(data)), model.dims).item()

    @torch.no_grad()
    def evaluate(self, model, data, device, k: int = 100) -> dict[str, float]:
        elbo = iwae = 0.0
        for x in batches(data, max(1, 2000 // k), device):
            elbo += model.elbo(x).sum().item()
            iwae += model.iwae(x, k=k).sum().item()
        scale = 1.0 / (len(data) * model.dims * math.log(2.0))
        return {"test_elbo_bpd": -elbo * scale, "test_iwae_bpd": -iwae * scale, "iwae_k": k}


class PixelCNNTask(Task):
    name = "pixelcnn"
    # On the digits (8 blocks, dropout 0.2, cosine decay) the validation NLL bottoms out
    # after about 55 of 100 epochs; model selection keeps the best epoch.
    default_epochs = 100
    default_lr = 2e-3
    selection_metric = "val_bpd"
    model_class = PixelCNN

    def _labels(self, model, y):
        return y if model.num_classes is not None else None

    schedule_depends_on_total = True

    def learning_rate(self, base, epoch, epochs):
        # Cosine decay to zero over the run.
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

    def train_step(self, net, model, batch, optimizers, scaler, amp):
        x, y = batch
        with autocast(x.device, amp):
            logits = net(x, self._labels(model, y))
            # Mean NLL per sub-pixel in nats: the loss scale does not depend on image size.
            loss = F.cross_entropy(logits.float(), x)
        _step(loss, optimizers["model"], scaler)
        return {"loss": loss.item()}

    @torch.no_grad()
    def _nll_bpd(self, model, data, device) -> float:
        total = 0.0
        for x, y in batches(data, 256, device, labels=True):
            total -= model.log_prob(x, self._labels(model, y)).sum().item()
        return bits_per_dim(torch.tensor(total / len(data)), model.dims).item()

    def validate(self, model, data, device) -> float:
        return self._nll_bpd(model, data, device)

    def evaluate(self, model, data, device) -> dict[str, float]:
        return {"test_bpd": self._nll_bpd(model, data, device)}


class GatedPixelCNNTask(PixelCNNTask):
    name = "gated-pixelcnn"
    # With dropout 0.3 and the cosine decay, the validation NLL flattens near epoch 55.
    default_epochs = 60
    model_class = GatedPixelCNN


class RowLSTMTask(PixelCNNTask):
    name = "row-lstm"
    kind = "row"
    # 30 epochs ended the cosine decay while the validation NLL was still falling
    # (benchmarks/results/cpu-pixelrnn.md has the runs).
    default_epochs = 60
    model_class = PixelRNN

    def model_config(self) -> dict:
        return {"kind": self.kind, **super().model_config()}


class DiagonalBiLSTMTask(RowLSTMTask):
    name = "diagonal-bilstm"
    kind = "diagonal"
    default_epochs = 60


class DCGANTask(Task):
    name = "dcgan"
    # Measured on the digits (WGAN-GP, 2-core CPU): with 2 critic steps per generator step
    # and lr 4e-4 the averaged generator is still improving slowly at 300 epochs.
    default_epochs = 300
    default_lr = 4e-4
    betas = (0.5, 0.9)
    # The generator weights' moving average (~100 generator steps, ~12 epochs) samples
    # better and is far steadier from epoch to epoch than the raw weights.
    ema_decay = 0.99
    # Selection: the Frechet distance plus a class-balance term. At the FD of a good
    # digits GAN (5-10) a class histogram 0.1 from uniform weighs as much as 5 FD units.
    selection_metric = "val_score"
    tv_weight = 50.0
    model_class = DCGAN
    eval_samples = 2000
    # Validation and test draw different latents, so the test metrics are not those of
    # the very samples the selection saw.
    val_seed, test_seed = 1, 2

    def __init__(self, splits: Splits, model_kwargs: dict, loss: str | None = None, target=None):
        super().__init__(splits, model_kwargs, target=target)
        self.loss = loss or "wgan-gp"
        if self.loss not in gan_losses.LOSSES:
            raise ValueError(f"loss must be one of {gan_losses.LOSSES}, got {self.loss!r}")
        # WGAN-GP trains the critic several steps per generator step (Gulrajani et al. use
        # 5); on the digits 2 gives the generator 2.5x the updates in the same time and
        # reaches a lower FD and class imbalance within the time budget.
        self.n_critic = 2 if self.loss == "wgan-gp" else 1
        self.steps = 0

    def model_config(self) -> dict:
        return {**self.data_kwargs(), "ema_decay": self.ema_decay, **self.model_kwargs}

    def state_dict(self) -> dict:
        # The critic-step count sets which step trains the generator: a resumed run must
        # keep it (an epoch need not be a multiple of n_critic steps).
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state.get("steps", 0))

    def optimizers(self, model, lr):
        betas = self.betas
        return {
            "generator": torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas),
            "critic": torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas),
        }

    def wrap(self, model, device):
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.Module()
        wrapped.generator = nn.parallel.DistributedDataParallel(model.generator, device_ids=ids)
        wrapped.discriminator = nn.parallel.DistributedDataParallel(
            model.discriminator, device_ids=ids
        )
        return wrapped

    def train_step(self, net, model, batch, optimizers, scaler, amp):
        x, y = batch
        cond = (y,) if model.num_classes is not None else ()
        real = model.to_unit(x)
        with autocast(x.device, amp):
            fake = net.generator(model.latents(len(x)), *cond).float()
            d_real = net.discriminator(real, *cond).float()
            d_fake = net.discriminator(fake.detach(), *cond).float()
            loss_d = gan_losses.critic_loss(self.loss, d_real, d_fake)
        if self.loss in gan_losses.PENALTY:
            # "auto": the first-order exact method when the critic is a piecewise-linear
            # chain (no double backward), else the double backward; the same gradients.
            loss_d = loss_d + gradient_penalty(
                net.discriminator, real, fake.detach(), kind=gan_losses.PENALTY[self.loss],
                critic_args=cond, scaler=scaler, method="auto",
            )  # fmt: skip
        _step(loss_d, optimizers["critic"], scaler)
        stats = {"loss": loss_d.item()}
        self.steps += 1
        if self.steps % self.n_critic == 0:
            with autocast(x.device, amp):
                fake = net.generator(model.latents(len(x)), *cond)
                loss_g = gan_losses.generator_loss(
                    self.loss, net.discriminator(fake.float(), *cond).float()
                )
            _step(loss_g, optimizers["generator"], scaler)
            model.update_ema()
            stats["generator_loss"] = loss_g.item()
        return stats

    def _samples(self, model, n, seed):
        # A fixed generator: epochs are compared on the same latents, and the training RNG
        # stream is left untouched.
        device = next(model.parameters()).device
        return model.sample(n, generator=torch.Generator(device=device).manual_seed(seed))

    @torch.no_grad()
    def validate(self, model, data, device) -> dict[str, float]:
        from genmodels.evaluation import classifier_for, features, frechet_distance, mode_coverage

        classifier = classifier_for(self.splits.train)
        real, _ = features(classifier, data.images)
        fake, predicted = features(classifier, self._samples(model, 1000, self.val_seed).cpu())
        covered, tv = mode_coverage(predicted, classifier.head.out_features)
        fd = frechet_distance(real, fake)
        return {"val_score": fd + self.tv_weight * tv, "val_fd": fd, "val_class_tv": tv,
                "val_classes_covered": covered}  # fmt: skip

    @torch.no_grad()
    def evaluate(self, model, data, device) -> dict[str, float]:
        from genmodels.evaluation import classifier_for, gan_metrics

        classifier = classifier_for(self.splits.train)
        samples = self._samples(model, self.eval_samples, self.test_seed).cpu()
        return gan_metrics(classifier, data, samples)


TASKS: dict[str, type[Task]] = {
    "pixelcnn": PixelCNNTask,
    "gated-pixelcnn": GatedPixelCNNTask,
    "vae": VAETask,
    "dcgan": DCGANTask,
    "row-lstm": RowLSTMTask,
    "diagonal-bilstm": DiagonalBiLSTMTask,
}

# The domain-adaptation tasks (`genmodels adapt`) build on Task above: registered last.
from genmodels.adapt.tasks import ADAPT_TASKS  # noqa: E402

TASKS.update(ADAPT_TASKS)
