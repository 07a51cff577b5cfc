"""genmodels.ops.diagonal_lstm: every backend against the reference (the spec)."""

import pytest
import torch
from _lstm_cases import *  # noqa: F403 (the shared tests)
from _lstm_cases import LstmSpec, make_inputs

from genmodels import recipes
from genmodels.nn import DiagonalLSTM
from genmodels.ops import diagonal_lstm
from genmodels.ops.diagonal_lstm import _backward_op, _op, diagonal_lstm_reference


@pytest.fixture(params=[False, True], ids=["left_to_right", "right_to_left"])
def spec(request):
    reverse = request.param
    return LstmSpec(
        name="diagonal_lstm",
        fn=lambda gx, w, b, backend="auto": diagonal_lstm(
            gx, w, b, reverse=reverse, backend=backend
        ),
        reference=lambda gx, w, b: diagonal_lstm_reference(gx, w, b, reverse=reverse),
        recipe=lambda gx, w, b: recipes.diagonal_lstm_recipe(gx, w, b, reverse),
        kernel_size=2,
        op=_op,
        backward_op=_backward_op,
        op_args=lambda gx, w, b, backend: (gx, w, b, reverse, backend),
    )


def test_reverse_is_the_mirror():
    spec = LstmSpec("", None, None, None, 2, None, None, None)
    gates_x, weight, bias = make_inputs(spec, (2, 8, 5, 6))
    mirrored = diagonal_lstm(gates_x.flip(3), weight, bias).flip(3)
    torch.testing.assert_close(diagonal_lstm(gates_x, weight, bias, reverse=True), mirrored)


def test_taps_read_above_and_left():
    # With only the "above" tap the state of (r, j) depends on column j alone (no state
    # arrives from the left but the cell); with only the "left" tap, on row r alone.
    spec = LstmSpec("", None, None, None, 2, None, None, None)
    gates_x, weight, bias = make_inputs(spec, (1, 8, 4, 5))
    bumped = gates_x.clone()
    bumped[:, :, 0, 2] += 1.0
    above_only = weight.clone()
    above_only[:, :, 1] = 0
    diff = diagonal_lstm(bumped, above_only, bias) - diagonal_lstm(gates_x, above_only, bias)
    changed = diff.abs().amax(dim=(0, 1)) > 0
    # Column 2 changes below; the cell carries it right along row 0 and from there down.
    assert changed[:, 2].all() and changed[0, 2:].all() and not changed[:, :2].any()
    assert not changed[0, :2].any()


def test_reverse_must_be_bool():
    gates_x = torch.randn(2, 8, 5, 6)
    with pytest.raises(TypeError, match="reverse must be a bool"):
        diagonal_lstm(gates_x, torch.randn(8, 2, 2), reverse=1)


def test_module():
    layer = DiagonalLSTM(2, reverse=True)
    gates_x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(
        layer(gates_x), diagonal_lstm_reference(gates_x, layer.weight, layer.bias, reverse=True)
    )
