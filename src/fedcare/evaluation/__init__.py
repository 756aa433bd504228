"""fedcare.evaluation: metrics, cross-site summaries and the HTML report.

* :mod:`~fedcare.evaluation.metrics`: accuracy, AUROC, C-index, log loss and
  :func:`compute_metrics` (pure numpy), for every task of :mod:`fedcare.records.tasks`; the
  multiclass, multilabel and regression metrics are in
  :mod:`~fedcare.evaluation.task_metrics`.
* :mod:`~fedcare.evaluation.summary`: weighted/unweighted site aggregates, the cross-site
  matrix and the EXAM-study summary (pure functions over plain dicts).
* :mod:`~fedcare.evaluation.report`: the self-contained HTML report (plots in
  :mod:`~fedcare.evaluation.plots`).
"""

from fedcare.evaluation.metrics import (
    HEADLINE_METRIC,
    METRICS_BY_TASK,
    accuracy,
    auroc,
    binary_log_loss,
    cindex,
    compute_metrics,
)
from fedcare.evaluation.report import render_report, write_report
from fedcare.evaluation.summary import cross_site_matrix, exam_summary, summarize_sites

__all__ = [
    "HEADLINE_METRIC",
    "METRICS_BY_TASK",
    "accuracy",
    "auroc",
    "binary_log_loss",
    "cindex",
    "compute_metrics",
    "cross_site_matrix",
    "exam_summary",
    "render_report",
    "summarize_sites",
    "write_report",
]
