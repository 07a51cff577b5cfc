import pytest
import torch

from genmodels.models import GatedPixelCNN, PixelCNN

MODELS = [PixelCNN, GatedPixelCNN]


def images(n, channels, size, levels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, channels, size, size), generator=g)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("channels,levels", [(1, 17), (3, 4)])
def test_logits_shape_and_log_prob(model_class, channels, levels):
    torch.manual_seed(0)
    model = model_class(
        in_channels=channels, image_size=5, levels=levels, hidden_channels=12, num_layers=2
    ).eval()  # dropout off: two calls give the same logits
    x = images(3, channels, 5, levels)
    logits = model(x)
    assert logits.shape == (3, levels, channels, 5, 5)
    lp = model.log_prob(x)
    assert lp.shape == (3,) and (lp < 0).all()
    want = torch.log_softmax(logits, 1).gather(1, x.unsqueeze(1)).squeeze(1).flatten(1).sum(1)
    torch.testing.assert_close(lp, want)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("channels", [1, 3])
def test_autoregressive_in_raster_and_colour_order(model_class, channels):
    # The logits of sub-pixel (c, i, j) depend only on sub-pixels before it: rows above,
    # pixels to the left, and earlier colour channels of the same pixel.
    torch.manual_seed(0)
    size, levels = 5, 4
    model = model_class(
        in_channels=channels, image_size=size, levels=levels, hidden_channels=12, num_layers=2
    ).eval()  # dropout off (test_dropout_keeps_the_order covers training mode)
    base = images(1, channels, size, levels)
    for c, i, j in [(0, 2, 2), (channels - 1, 3, 1), (0, 0, 0)]:
        position = (i * size + j) * channels + c
        reference = model(base)[0]
        for cc in range(channels):
            for ii in range(size):
                for jj in range(size):
                    changed = base.clone()
                    changed[0, cc, ii, jj] = (changed[0, cc, ii, jj] + 1) % levels
                    later = (ii * size + jj) * channels + cc >= position
                    if later:
                        after = model(changed)[0, :, c, i, j]
                        assert torch.equal(after, reference[:, c, i, j]), ((c, i, j), (cc, ii, jj))


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("channels", [1, 3])
def test_rows_above_need_no_rows_below(model_class, channels):
    # What sample() relies on: the network run on the image cut below row i gives the same
    # outputs for rows <= i as on the whole image.
    torch.manual_seed(0)
    model = model_class(in_channels=channels, image_size=6, levels=5, hidden_channels=12,
                        num_layers=3).eval()  # fmt: skip
    x = images(2, channels, 6, 5)
    full = model._net(x, None)
    for i in range(6):
        torch.testing.assert_close(model._net(x[:, :, : i + 1], None), full[:, :, : i + 1])


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_dropout_keeps_the_order(model_class):
    # In training mode, with the same dropout draw for both inputs: changing a pixel changes
    # no logit at or before it in raster order.
    torch.manual_seed(0)
    size, levels = 5, 4
    model = model_class(image_size=size, levels=levels, hidden_channels=12, num_layers=3,
                        dropout=0.5).train()  # fmt: skip
    base = images(1, 1, size, levels)
    changed = base.clone()
    changed[0, 0, 2, 3] = (changed[0, 0, 2, 3] + 1) % levels
    torch.manual_seed(1)
    a = model(base)[0, :, 0].flatten(1)
    torch.manual_seed(1)
    b = model(changed)[0, :, 0].flatten(1)
    same = (a == b).all(0)
    assert same[: 2 * size + 3 + 1].all()  # positions up to and including (2, 3)
    assert not same.all()  # the dropout masks did not zero everything after it
    torch.manual_seed(2)
    first = model(base)
    assert not torch.equal(first, model(base))  # dropout is active in training mode
    model.eval()
    assert torch.equal(model(base), model(base))


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_sample_and_conditioning(model_class):
    torch.manual_seed(0)
    model = model_class(image_size=4, levels=5, hidden_channels=8, num_layers=2, num_classes=3)
    y = torch.tensor([0, 2])
    samples = model.sample(2, y=y)
    assert samples.shape == (2, 1, 4, 4) and samples.min() >= 0 and samples.max() < 5
    x = images(2, 1, 4, 5)
    with pytest.raises(ValueError, match="labels"):
        model(x)
    assert model(x, y).shape == (2, 5, 1, 4, 4)


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_training_reduces_the_loss(model_class):
    torch.manual_seed(0)
    model = model_class(image_size=4, levels=3, hidden_channels=8, num_layers=2)
    x = (torch.arange(16).view(1, 1, 4, 4) % 3).repeat(8, 1, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = -model.log_prob(x).mean().item()
    for _ in range(30):
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(levels=1), "levels"),
        (dict(hidden_channels=0), "hidden_channels"),
        (dict(num_layers=0), "num_layers"),
        (dict(in_channels=3, hidden_channels=10), "divisible by 6"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_bad_arguments(kwargs, match):
    for model_class in MODELS:
        with pytest.raises(ValueError, match=match):
            model_class(**kwargs)


def test_wrong_input_shape():
    model = PixelCNN(hidden_channels=8, num_layers=1)
    with pytest.raises(RuntimeError, match="x must be"):
        model(torch.zeros(2, 1, 7, 7, dtype=torch.long))
