"""ADDA (Tzeng, Hoffman, Saenko and Darrell 2017, "Adversarial discriminative domain
adaptation").

1. Stage "pretrain": the source encoder and the label classifier learn the source labels.
2. Stage "adapt": the target encoder starts as a copy of the source encoder (untied
   weights); the source encoder and the classifier are frozen. An adversarial
   discriminator on the features (an MLP 500-500-1 with ReLU,
   `genmodels.models.adapt.DomainDiscriminator`) learns to tell source features from
   target features, and the target encoder learns to fool it; target images are then
   classified by the target encoder and the source classifier.

Adversaries (``adversary``, losses from `genmodels.models.gan_losses`, source features
playing "real"):

- ``"gan"`` (default): the paper's inverted-label GAN loss: the discriminator's binary
  cross-entropy, and for the target encoder the cross-entropy with the labels inverted
  (gan_losses' "non-saturating" generator loss);
- ``"lsgan"``: least squares (Mao et al. 2017);
- ``"wgan-gp"``: a Wasserstein critic with the gradient penalty of Gulrajani et al. 2017
  (``genmodels.gan.gradient_penalty``, weight 10, at random interpolates of source and
  target features). The critic is a Linear/ReLU chain, so ``method="auto"`` takes the exact
  first-order path (no double backward).

Both adversarial optimizers are Adam with betas (0.5, 0.999) at ``lr * adapt_lr_ratio``
(2e-4 with the default --lr 1e-3, the paper's rate).

Selection: the last iterate (no target labels).
"""

from __future__ import annotations

import torch

from genmodels.adapt.base import AdaptTask
from genmodels.gan import gradient_penalty
from genmodels.models import gan_losses

ADVERSARIES = {"gan": "non-saturating", "lsgan": "lsgan", "wgan-gp": "wgan-gp"}
BETAS = (0.5, 0.999)


class ADDATask(AdaptTask):
    name = "adapt-adda"
    method = "adda"
    separate_target = True
    adapt_lr_ratio = 0.2
    extra_options = ("adversary",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.adversary = self.options.get("adversary") or "gan"
        if self.adversary not in ADVERSARIES:
            raise ValueError(
                f"--adversary must be one of {sorted(ADVERSARIES)}, got {self.adversary!r}"
            )
        self.loss_kind = ADVERSARIES[self.adversary]
        self.penalty_method = "auto"

    def optimizers(self, model, lr):
        return {
            "source": torch.optim.Adam(self.source_parameters(model), lr=lr),
            "target": torch.optim.Adam(model.target_encoder.parameters(), lr=lr, betas=BETAS),
            "domain": torch.optim.Adam(model.domain.parameters(), lr=lr, betas=BETAS),
        }

    def start_adaptation(self, model):
        model.init_target_from_source()

    def adapt_step(self, net, model, x_s, y_s, x_t, optimizers):
        # The source encoder is fixed: its features in eval mode (no dropout).
        model.encoder.eval()
        with torch.no_grad():
            f_s = model.encoder(x_s)
        f_t = net.target_encoder(x_t)
        # The discriminator: source features are "real".
        d = net.domain(torch.cat([f_s, f_t.detach()])).squeeze(1)
        loss_d = gan_losses.critic_loss(self.loss_kind, d[: len(f_s)], d[len(f_s) :])
        if self.adversary == "wgan-gp":
            n = min(len(f_s), len(f_t))
            loss_d = loss_d + gradient_penalty(
                net.domain, f_s[:n], f_t[:n].detach(), kind="wgan-gp", method=self.penalty_method
            )
        optimizers["domain"].zero_grad(set_to_none=True)
        loss_d.backward()
        optimizers["domain"].step()
        # The target encoder: fool the discriminator.
        loss_t = gan_losses.generator_loss(self.loss_kind, net.domain(f_t).squeeze(1))
        optimizers["target"].zero_grad(set_to_none=True)
        loss_t.backward()
        optimizers["target"].step()
        return {"loss": loss_d.item(), "target_loss": loss_t.item()}
