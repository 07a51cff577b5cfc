"""The adaptation tasks by the name the training loop knows them by (adapt-METHOD)."""

from genmodels.adapt.adda import ADDATask
from genmodels.adapt.confusion import ConfusionTask
from genmodels.adapt.grad_reverse import GradReverseTask
from genmodels.adapt.source_only import SourceOnlyTask

ADAPT_TASKS = {
    task.name: task for task in (SourceOnlyTask, GradReverseTask, ConfusionTask, ADDATask)
}
