"""genmodels.models.PixelRNN: causality by perturbation, cached sampling, the interface."""

import pytest
import torch

from genmodels.models import PixelRNN

KINDS = ["row", "diagonal"]


def _model(kind, in_channels, size=5, levels=5, **kw):
    torch.manual_seed(0)
    kw = dict(hidden_channels=6, num_layers=2, dropout=0.0) | kw
    return PixelRNN(kind, in_channels=in_channels, image_size=size, levels=levels, **kw).eval()


def _order(channels, height, width):
    return [(i, j, c) for i in range(height) for j in range(width) for c in range(channels)]


@pytest.mark.parametrize("in_channels", [1, 3], ids=["gray", "rgb"])
@pytest.mark.parametrize("kind", KINDS)
def test_causal_by_perturbation(kind, in_channels):
    height = width = 5
    levels = 5
    model = _model(kind, in_channels, size=5, levels=levels)
    torch.manual_seed(1)
    x = torch.randint(0, levels, (1, in_channels, height, width))
    with torch.no_grad():
        base = model(x)
        order = _order(in_channels, height, width)
        last = order[-1]
        for n, (i, j, c) in enumerate(order):
            bumped = x.clone()
            bumped[0, c, i, j] = (bumped[0, c, i, j] + 2) % levels
            changed = (model(bumped) - base).abs().amax(dim=1)[0] > 0  # [C, H, W]
            # Never itself or anything earlier.
            for i2, j2, c2 in order[: n + 1]:
                assert not changed[c2, i2, j2], f"x[{c},{i},{j}] changes logits of {c2},{i2},{j2}"
            # The last sub-pixel's receptive field is the whole image here: everything
            # earlier reaches it.
            if (i, j, c) != last:
                assert changed[last[2], last[0], last[1]], f"x[{c},{i},{j}] does not reach the last"


@pytest.mark.parametrize("in_channels", [1, 3], ids=["gray", "rgb"])
@pytest.mark.parametrize("kind", KINDS)
def test_cached_sampling_makes_the_naive_draws(kind, in_channels):
    model = _model(kind, in_channels).double()
    naive = model.sample(3, generator=torch.Generator().manual_seed(3), method="naive")
    cached = model.sample(3, generator=torch.Generator().manual_seed(3), method="cached")
    assert naive.shape == (3, in_channels, 5, 5)
    assert torch.equal(naive, cached)


@pytest.mark.parametrize("kind", KINDS)
def test_class_conditional_cached_sampling(kind):
    model = _model(kind, 1, num_classes=3).double()
    y = torch.tensor([0, 2])
    naive = model.sample(2, y, generator=torch.Generator().manual_seed(0), method="naive")
    cached = model.sample(2, y, generator=torch.Generator().manual_seed(0), method="cached")
    assert torch.equal(naive, cached)


class _Sub(PixelRNN):
    pass


def _hooked(model):
    # Shifts every logit of the first level: a change forward sees and a reimplementation
    # of forward would not.
    def hook(module, inputs, out):
        out = out.clone()
        out[:, :: model.levels] += 3.0
        return out

    model.output[3].register_forward_hook(hook)
    return model


def _replaced(model):
    model.output[2] = torch.nn.Tanh()
    return model


def _subclass(model):
    model.__class__ = _Sub
    return model


def _parametrized(model):
    torch.nn.utils.parametrize.register_parametrization(model.output[3], "weight", _Doubled())
    return model


class _Doubled(torch.nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize("change", [_hooked, _replaced, _subclass, _parametrized])
@pytest.mark.parametrize("kind", KINDS)
def test_cached_sampling_falls_back_on_a_model_it_does_not_know(kind, change):
    model = change(_model(kind, 1).double())
    with pytest.warns(RuntimeWarning, match="method='naive'"):
        cached = model.sample(3, generator=torch.Generator().manual_seed(3), method="cached")
    naive = model.sample(3, generator=torch.Generator().manual_seed(3), method="naive")
    assert torch.equal(naive, cached)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_sampling_of_no_images(kind):
    x = _model(kind, 3).sample(0, method="cached")
    assert x.shape == (0, 3, 5, 5) and x.dtype == torch.long


@pytest.mark.parametrize("kind", KINDS)
def test_interface(kind):
    model = _model(kind, 1, size=8, levels=17)
    x = torch.randint(0, 17, (4, 1, 8, 8))
    assert model(x).shape == (4, 17, 1, 8, 8)
    lp = model.log_prob(x)
    assert lp.shape == (4,) and torch.isfinite(lp).all() and (lp < 0).all()
    model.train()
    torch.nn.functional.cross_entropy(model(x), x).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_reference_backend_matches_native(kind):
    torch.manual_seed(0)
    x = torch.randint(0, 17, (2, 1, 6, 6))
    native = _model(kind, 1, size=6, levels=17)
    reference = _model(kind, 1, size=6, levels=17, backend="reference")
    reference.load_state_dict(native.state_dict())
    torch.testing.assert_close(native(x), reference(x), rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind must be one of"):
        PixelRNN("column")
    with pytest.raises(ValueError, match="hidden_channels must be divisible by 6"):
        PixelRNN("row", in_channels=3, hidden_channels=8)
    with pytest.raises(ValueError, match="method must be one of"):
        _model("row", 1).sample(1, method="fast")
    with pytest.raises(RuntimeError, match="x must be"):
        _model("row", 1)(torch.zeros(1, 1, 4, 4, dtype=torch.long))
