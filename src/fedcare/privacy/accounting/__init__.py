"""Privacy accounting in three layers (as in Opacus).

* :mod:`~fedcare.privacy.accounting.analysis`: pure functions, epsilon of a list of DP events
  by dp-accounting's RDP or PLD accountants (Opacus's RDP analysis is in
  :mod:`fedcare.privacy.torch`);
* :mod:`~fedcare.privacy.accounting.accountant`: a small stateful :class:`Accountant` that
  records events and saves/restores itself;
* :mod:`~fedcare.privacy.accounting.registry`: accountants by name (``"rdp"``, ``"pld"``,
  ``"opacus-rdp"``).
"""

from fedcare.privacy.accounting.accountant import Accountant, create_accountant
from fedcare.privacy.accounting.analysis import (
    DpEvent,
    event_from_dict,
    noise_multiplier_for_epsilon,
    pld_epsilon,
    rdp_epsilon,
)
from fedcare.privacy.accounting.registry import (
    ACCOUNTANTS,
    accountant_names,
    epsilon_of,
)

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "DpEvent",
    "accountant_names",
    "create_accountant",
    "epsilon_of",
    "event_from_dict",
    "noise_multiplier_for_epsilon",
    "pld_epsilon",
    "rdp_epsilon",
]
