"""What training, validation, evaluation and sampling mean for each model.

A task builds its model from the data, runs one optimization step on a batch, scores
the model on the validation split for model selection (lower is better), computes the
final test metrics and draws samples. The loop in training/loop.py is model-agnostic.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.data import ImageDataset, Splits
from genmodels.models import VAE, GatedPixelCNN, PixelCNN
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
    selection_metric: str

    def __init__(self, splits: Splits, model_kwargs: dict):
        self.splits = splits
        self.model_kwargs = model_kwargs

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

    def train_step(self, net, model, x, y, optimizers, scaler, amp: bool) -> dict[str, float]:
        raise NotImplementedError

    def validate(self, model, data: ImageDataset, device) -> float:
        raise NotImplementedError

    def evaluate(self, model, data: ImageDataset, device) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, model, n: int, **kwargs) -> torch.Tensor:
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

    def train_step(self, net, model, x, y, optimizers, scaler, amp):
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
    default_epochs = 30
    default_lr = 1e-3
    selection_metric = "val_bpd"
    model_class = PixelCNN

    def _labels(self, model, y):
        return y if model.num_classes is not None else None

    def train_step(self, net, model, x, y, optimizers, scaler, amp):
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
    model_class = GatedPixelCNN


TASKS: dict[str, type[Task]] = {
    "pixelcnn": PixelCNNTask,
    "gated-pixelcnn": GatedPixelCNNTask,
    "vae": VAETask,
}
