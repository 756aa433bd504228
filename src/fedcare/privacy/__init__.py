"""Differential privacy: mechanisms, local DP-SGD, accounting, a study's DP settings.

* :mod:`~fedcare.privacy.mechanisms` -- the Gaussian mechanism as pure functions (injected
  generator, new records, no default seed);
* :mod:`~fedcare.privacy.accounting` -- epsilon of DP events in three layers (pure analysis
  over dp-accounting/Opacus, a stateful :class:`Accountant` that saves and restores itself,
  a registry by name);
* :mod:`~fedcare.privacy.dp_sgd` -- sample-level DP-SGD in a site's training (numpy logistic
  regression, PyTorch models through Opacus);
* :mod:`~fedcare.privacy.study` -- ``privacy.dp`` in a study file and what it builds;
* :mod:`~fedcare.privacy.summary` -- epsilon per round, site and study from a round history.

The aggregation layers (clip + Gaussian noise, adaptive clipping, distributed DP) live with
the other layers in :mod:`fedcare.aggregation` and report ``dp_event`` measurements.
"""

from fedcare.privacy.accounting import Accountant, DpEvent, epsilon_of
from fedcare.privacy.dp_sgd import DpSgdSpec

__all__ = ["Accountant", "DpEvent", "DpSgdSpec", "epsilon_of"]
