"""Federated statistics: counts, moments, histograms, quantiles, correlation, Kaplan-Meier and
cohorts, with small-cell suppression and optional DP noise at every site.

The site half of each statistic and its coordinator half live together, one file per statistic
(:mod:`.count`, :mod:`.mean_variance`, :mod:`.histogram`, :mod:`.quantiles`,
:mod:`.correlation`, :mod:`.kaplan_meier`; cohorts use :mod:`.filters`). :mod:`.answer` is what
a site runs for an ``analytics`` task, :mod:`.run` what the coordinator runs over any Grid, and
:mod:`.disclosure` the suppression and noise rules. :mod:`.moments` and :mod:`.federated` serve
the ``stats`` task kind (global scaling before training).
"""

from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.analytics.run import AnalyticsResult, run_analytics
from fedcare.analytics.spec import AnalyticsSpec

__all__ = ["AnalyticsPolicy", "AnalyticsResult", "AnalyticsSpec", "run_analytics"]
