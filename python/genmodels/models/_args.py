"""Constructor-argument checks shared by the models (errors name the argument)."""

from __future__ import annotations

from genmodels.ops import _checks


def check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_levels(levels) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int of at least 2, got {levels!r}")


def check_probability(**values) -> None:
    for name, value in values.items():
        _checks.check_probability(value, name)
