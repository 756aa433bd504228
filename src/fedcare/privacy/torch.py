"""Opacus's RDP analysis (extra ``dp``), the ``"opacus-rdp"`` accountant.

Importing this module does not import Opacus; calling its function does, and raises an error
naming the extra to install when Opacus is missing. DP-SGD for PyTorch models through Opacus's
``PrivacyEngine`` is the torch adapter's training loop (:mod:`fedcare.models.torch`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from fedcare.errors import ConfigError
from fedcare.privacy.accounting.analysis import DpEvent, _check_delta

__all__ = ["opacus_rdp_epsilon"]


def opacus_rdp_epsilon(events: Iterable[DpEvent], delta: float) -> float:
    """Epsilon of ``events`` by Opacus's RDP analysis (its default orders); needs ``opacus``.

    Raises
    ------
    ConfigError
        If Opacus is not installed (``pip install 'fedcare[dp]'``).
    """
    delta = _check_delta(delta)
    try:
        from opacus.accountants.analysis import rdp as opacus_rdp
        from opacus.accountants.rdp import RDPAccountant
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "accountant 'opacus-rdp' needs opacus: pip install 'fedcare[dp]'"
        ) from err
    orders = list(RDPAccountant.DEFAULT_ALPHAS)
    total = 0.0
    for event in events:
        if event.noise_multiplier == 0:
            return math.inf
        total = total + opacus_rdp.compute_rdp(
            q=event.sampling_probability,
            noise_multiplier=event.noise_multiplier,
            steps=event.count,
            orders=orders,
        )
    if isinstance(total, float):
        return 0.0
    eps, _ = opacus_rdp.get_privacy_spent(orders=orders, rdp=total, delta=delta)
    return float(eps)
