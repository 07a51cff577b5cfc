"""Source only: the encoder and label classifier trained on the source labels alone; the
target accuracy of that classifier is the baseline every adaptation method must beat.

Selection: the epoch with the best source validation accuracy (no target labels).
"""

from __future__ import annotations

from genmodels.adapt.base import AdaptTask


class SourceOnlyTask(AdaptTask):
    name = "adapt-source-only"
    method = "source-only"
    stages = ("train",)
    selection_metric = "val_source_accuracy"

    # Its whole run is the other methods' pretraining stage.
    default_epochs = AdaptTask.default_pretrain_epochs

    def stage(self, epoch, epochs):
        self.epochs = epochs
        return "train"

    def learning_rate(self, base, epoch, epochs):
        return base
