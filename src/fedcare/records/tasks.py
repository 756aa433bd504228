"""The task vocabulary: what a model predicts, and which metrics each task reports.

Plain data (no numpy), so that every layer can name a task: the data layer (a dataset's task),
the models (an adapter's task), the evaluation (the metrics to compute) and the coordinator
(the metrics a report lists). The metric functions themselves live in
:mod:`fedcare.evaluation.metrics` and :mod:`fedcare.evaluation.task_metrics`.

=============  ==========================================  ===================================
task           the model's prediction, ``y``               metrics (headline first)
=============  ==========================================  ===================================
binary         ``(n,)`` P(y = 1); ``y`` 0/1                accuracy, auroc (headline: auroc)
multiclass     ``(n, K)`` class probabilities (rows sum    macro_auroc, accuracy,
               to 1); ``y`` class index ``0 .. K-1``       balanced_accuracy, macro_f1,
                                                           log_loss
multilabel     ``(n, L)`` P(label = 1) per label;          macro_auroc, macro_f1,
               ``y`` ``(n, L)`` 0/1                        subset_accuracy, hamming_accuracy
regression     ``(n,)`` the predicted value; ``y`` real    mae, rmse, r2
survival       ``(n,)`` risk (higher = earlier event);     cindex
               ``y`` event 0/1 plus times
=============  ==========================================  ===================================

The *headline* metric (:data:`HEADLINE_METRIC`) is the one a model selection or a report's
summary uses for the task; :data:`LOWER_IS_BETTER` names the metrics where smaller is better
(errors and losses), so that a selection knows which way to compare.
"""

from __future__ import annotations

from typing import Literal, get_args

from fedcare.errors import ValidationError

__all__ = [
    "HEADLINE_METRIC",
    "LOWER_IS_BETTER",
    "METRICS_BY_TASK",
    "TASKS",
    "TaskType",
    "check_task",
]

TaskType = Literal["binary", "multiclass", "multilabel", "regression", "survival"]
"""The kinds of prediction fedcare trains and evaluates."""

TASKS: tuple[TaskType, ...] = get_args(TaskType)
"""Every task, in the order of :data:`TaskType`."""

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    # binary and survival: the names and order they always had (reports and records use them)
    "binary": ("accuracy", "auroc"),
    "multiclass": ("macro_auroc", "accuracy", "balanced_accuracy", "macro_f1", "log_loss"),
    "multilabel": ("macro_auroc", "macro_f1", "subset_accuracy", "hamming_accuracy"),
    "regression": ("mae", "rmse", "r2"),
    "survival": ("cindex",),
}
"""The metrics ``compute_metrics`` returns for each task (besides ``"n"``)."""

HEADLINE_METRIC: dict[str, str] = {
    "binary": "auroc",
    "multiclass": "macro_auroc",
    "multilabel": "macro_auroc",
    "regression": "mae",
    "survival": "cindex",
}
"""The one metric that ranks models of a task (model selection, a report's summary)."""

LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "rmse", "log_loss", "loss"})
"""Metrics where a smaller value is better; every other metric above is better when larger."""


def check_task(task: object) -> TaskType:
    """``task`` itself when it is one of :data:`TASKS`.

    Raises
    ------
    ValidationError
        ``task`` is not a known task (the message lists the known ones).
    """
    if task not in TASKS:
        raise ValidationError(f"task must be one of {list(TASKS)}, got {task!r}")
    return task
