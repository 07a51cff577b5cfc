"""Unsupervised domain adaptation: train on a labelled source domain, adapt to an unlabelled
target domain (`genmodels adapt`).

Methods, one module each, as tasks of the genmodels training loop (adapt/base.py has what
they share): `source_only`, `grad_reverse` (Ganin and Lempitsky 2015), `confusion`
(Tzeng et al. 2015) and `adda` (Tzeng et al. 2017). `adapt(AdaptConfig(...))` runs one,
`compare(...)` all of them over several seeds (adapt/run.py). Networks:
genmodels.models.adapt.
"""

# The training loop's task registry imports this package's tasks, which build on its Task:
# importing the registry first, whichever module is imported first, breaks the cycle.
import genmodels.training.tasks  # noqa: E402, F401

__all__ = ["METHODS", "AdaptConfig", "adapt", "compare"]


def __getattr__(name):
    # Lazily: the training loop imports the tasks of this package while it is itself
    # being imported, and run.py imports the loop.
    if name in __all__:
        from genmodels.adapt import run

        return getattr(run, name)
    raise AttributeError(f"module 'genmodels.adapt' has no attribute {name!r}")
