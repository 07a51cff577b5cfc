"""genmodels.ops.row_lstm: every backend against the reference (the spec)."""

import pytest
import torch
from _lstm_cases import *  # noqa: F403 (the shared tests)
from _lstm_cases import LstmSpec, _bad, make_inputs

from genmodels import recipes
from genmodels.nn import RowLSTM
from genmodels.ops import row_lstm
from genmodels.ops.row_lstm import _backward_op, _op, row_lstm_reference


@pytest.fixture(params=[3, 1, 5], ids=lambda k: f"k{k}")
def spec(request):
    k = request.param
    return LstmSpec(
        name="row_lstm",
        fn=lambda gx, w, b, backend="auto": row_lstm(gx, w, b, backend=backend),
        reference=row_lstm_reference,
        recipe=recipes.row_lstm_recipe,
        kernel_size=k,
        op=_op,
        backward_op=_backward_op,
        op_args=lambda gx, w, b, backend: (gx, w, b, backend),
        triton=k == 3,
    )


def test_even_kernel_size_is_refused():
    gates_x = torch.randn(2, 8, 5, 6)
    with pytest.raises(RuntimeError, match="kernel size k .* must be odd, got 2"):
        row_lstm(gates_x, torch.randn(8, 2, 2))


def test_first_row_is_the_cell_of_gates_x_and_bias():
    # Row 0 sees no state: h = o * tanh(i * g) of gates_x + bias, whatever the weight.
    gates_x, weight, bias = make_inputs(
        LstmSpec("", None, None, None, 3, None, None, None), (2, 8, 3, 4)
    )
    pre = gates_x[:, :, 0] + bias[:, None]
    i, f, g, o = pre.chunk(4, 1)
    expected = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
    torch.testing.assert_close(row_lstm(gates_x, weight, bias)[:, :, 0], expected)


def test_module():
    layer = RowLSTM(2, 3)
    gates_x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(
        layer(gates_x), row_lstm_reference(gates_x, layer.weight, layer.bias)
    )
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        RowLSTM(2, 4)


def test_native_entry_checks_its_inputs():
    from genmodels import _backend

    ok, why = _backend.native_available("cpu")
    if not ok:
        pytest.skip(why)
    entry = _backend.native_entry("row_lstm", "forward", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="gates_x must have 4C channels"):
        entry(torch.randn(1, 6, 2, 2), torch.randn(6, 1, 3), None)
    with pytest.raises(RuntimeError, match="must be odd"):
        entry(torch.randn(1, 8, 2, 2), torch.randn(8, 2, 2), None)


__all__ = ["_bad"]
