"""Gradient reversal (Ganin and Lempitsky 2015, "DANN"): a domain classifier on the
features, trained through `genmodels.nn.GradientReversal`, so that one backward pass trains
the classifier to tell source from target and the encoder to make them indistinguishable,
while the label classifier keeps learning the source labels.

The reversal weight follows the paper's schedule ``lambda_p = 2 / (1 + exp(-10 p)) - 1``,
p the fraction of the adaptation steps done (0 -> 1), so the domain signal starts at zero
while the domain classifier is still guessing. As in every method here, adaptation starts
from the pretrained source model (stage "pretrain"), where the paper trains from scratch
with the same rising lambda: the first part of that path, taken as a stage of its own so
that all four methods start from one source model and features.png shows the "before".

Selection: the last iterate (no target labels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genmodels.adapt.base import AdaptTask
from genmodels.ops import grad_reverse


def ganin_lambda(p: float) -> float:
    """The reversal weight at progress p in [0, 1]: 2 / (1 + exp(-10 p)) - 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


def domain_targets(n_source: int, n_target: int, device) -> torch.Tensor:
    """1 for source samples, 0 for target samples."""
    return torch.cat([torch.ones(n_source, device=device), torch.zeros(n_target, device=device)])


class GradReverseTask(AdaptTask):
    name = "adapt-grad-reverse"
    method = "grad-reverse"
    schedule_depends_on_total = True  # lambda_p runs over all adaptation steps

    def optimizers(self, model, lr):
        return {
            "source": torch.optim.Adam(self.source_parameters(model), lr=lr),
            "domain": torch.optim.Adam(model.domain.parameters(), lr=lr),
        }

    def adapt_step(self, net, model, x_s, y_s, x_t, optimizers):
        lambda_ = ganin_lambda(min(1.0, self.steps / max(1, self.adapt_steps_total())))
        # One encoder pass over both batches (DDP: one forward per backward).
        feats = net.encoder(torch.cat([x_s, x_t]))
        class_loss = F.cross_entropy(net.classifier(feats[: len(x_s)]), y_s)
        logits = net.domain(grad_reverse(feats, lambda_)).squeeze(1)
        domain_loss = F.binary_cross_entropy_with_logits(
            logits, domain_targets(len(x_s), len(x_t), logits.device)
        )
        loss = class_loss + domain_loss
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        return {"loss": loss.item(), "class_loss": class_loss.item(),
                "domain_loss": domain_loss.item(), "lambda": lambda_}  # fmt: skip
