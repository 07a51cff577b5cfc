"""The plain-PyTorch twins that benchmarks/bench_models.py compares the models against
must be the same architecture with the same weights: same outputs, same gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from plain_models import InplaceMaskedConv2d, RecipeMaskedConv2d, plain_twin  # noqa: E402

from genmodels.models import DCGAN, VAE, GatedPixelCNN, PixelCNN  # noqa: E402
from genmodels.nn import Dropout, MaskedConv2d  # noqa: E402


def _levels(n, c=1, size=8, levels=17):
    return torch.randint(0, levels, (n, c, size, size))


@pytest.mark.parametrize(
    "model",
    [
        lambda: PixelCNN(hidden_channels=16, num_layers=2),
        lambda: PixelCNN(in_channels=3, hidden_channels=24, num_layers=1, image_size=5),
        lambda: GatedPixelCNN(hidden_channels=16, num_layers=3),
        lambda: GatedPixelCNN(hidden_channels=16, num_layers=2, num_classes=10),
        lambda: PixelCNN(hidden_channels=16, num_layers=2, dropout=0.5),
    ],
)
@pytest.mark.parametrize("masking", ["inplace", "product"])
def test_autoregressive_twin_matches(model, masking):
    torch.manual_seed(0)
    model = model().double()
    twin = plain_twin(model, masking)
    assert not any(isinstance(m, MaskedConv2d) for m in twin.modules())
    kind = InplaceMaskedConv2d if masking == "inplace" else RecipeMaskedConv2d
    assert all(type(m) is kind for m in twin.modules() if isinstance(m, RecipeMaskedConv2d))
    assert any(isinstance(m, kind) for m in twin.modules())
    x = _levels(3, model.in_channels, model.image_size)
    y = torch.tensor([1, 4, 7]) if model.num_classes else None
    # The two dropouts draw different masks (genmodels' Philox stream, torch's generator):
    # compare with dropout off, and check that the twin has torch's nn.Dropout, same p, in
    # the same places.
    ours = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(isinstance(m, Dropout) for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert ours == [m.p for m in twin.modules() if type(m) is torch.nn.Dropout]
    assert not any(isinstance(m, Dropout) for m in twin.modules())
    model.eval()
    twin.eval()
    out, out_twin = model(x, y), twin(x, y)
    torch.testing.assert_close(out_twin, out)
    F.cross_entropy(out, x).backward()
    F.cross_entropy(out_twin, x).backward()
    # The in-place recipe's plain convolution gives the masked taps gradients too (the
    # next forward re-zeroes them): compare the kept taps.
    masks = {
        f"{name}.weight": m.mask
        for name, m in twin.named_modules()
        if isinstance(m, InplaceMaskedConv2d)
    }
    for (name, p), q in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        assert name == q[0]
        grad = q[1].grad if q[1].grad is None else q[1].grad * masks.get(name, 1)
        torch.testing.assert_close(grad, p.grad, msg=name)


def test_vae_twin_matches_with_the_same_noise():
    torch.manual_seed(0)
    model = VAE(hidden_channels=8, latent_dim=4).double()
    twin = plain_twin(model)
    x = _levels(5)
    mu, logvar = model.encode(x)
    # the recipe draws its noise with randn_like: replay it through the op's eps
    torch.manual_seed(1)
    z_twin, kl_twin = twin.sampler(mu, logvar)
    torch.manual_seed(1)
    eps = torch.randn_like(mu)
    from genmodels.ops import reparameterize_kl

    z, kl = reparameterize_kl(mu, logvar, eps=eps)
    torch.testing.assert_close(z_twin, z)
    torch.testing.assert_close(kl_twin, kl)


def test_no_twin_for_other_models():
    with pytest.raises(TypeError, match="DCGAN"):
        plain_twin(DCGAN())
