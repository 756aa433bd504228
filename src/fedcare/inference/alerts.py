"""Alerts on a deployed model's monitoring summary, and the continuous-learning study they
propose.

The thresholds are the study's ``monitoring:`` section
(:class:`~fedcare.records.monitoring_spec.MonitoringSpec`), carried in the bundle. Alerts are
computed from what the summary *reports* (a withheld AUROC raises no alert):

* ``auroc_below``: AUROC < ``min_auroc``, once ``min_outcomes`` outcomes are matched;
* ``calibration_slope_outside``: slope outside ``calibration_slope``, same condition;
* ``psi_above``: a feature's (or the score's) PSI > ``max_psi``.

When any fires, :func:`propose_update` makes a study file from the study's config (the model
card's ``config``): the same dataset, model and settings, ``init_model`` the deployed version
(fine-tuning from it; the registry records the lineage), fewer rounds, and the name suffixed
``-update-<date>``. It is a *proposal*: the study's lead decides whether to submit it, and the
sites approve its plan as any other (its hash differs from the deployed study's).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from fedcare.errors import ValidationError
from fedcare.records.monitoring_spec import MonitoringSpec
from fedcare.records.study import StudyConfig

__all__ = ["alerts", "propose_update", "thresholds_of", "write_proposal"]


def thresholds_of(monitoring: Mapping[str, Any]) -> MonitoringSpec:
    """The bundle's ``monitoring`` section, validated (``{}``: no threshold)."""
    try:
        return MonitoringSpec.model_validate(dict(monitoring))
    except ValueError as err:
        raise ValidationError(f"the bundle's monitoring thresholds are malformed: {err}") from None


def _metric(performance: Mapping[str, Any] | None, name: str) -> float | None:
    entry = ((performance or {}).get("metrics") or {}).get(name)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def alerts(
    spec: MonitoringSpec,
    *,
    performance: Mapping[str, Any] | None,
    matched: int,
    drift: Mapping[str, Any] | None,
) -> list[dict[str, str]]:
    """The alerts ``spec``'s thresholds raise on a summary's reported performance and drift."""
    out: list[dict[str, str]] = []
    enough = matched >= spec.min_outcomes
    auroc = _metric(performance, "auroc")
    if spec.min_auroc is not None and enough and auroc is not None and auroc < spec.min_auroc:
        out.append(
            {
                "kind": "auroc_below",
                "detail": f"AUROC {auroc:.3f} < {spec.min_auroc:g} on {matched} outcomes",
            }
        )
    slope = ((performance or {}).get("calibration") or {}).get("slope")
    if spec.calibration_slope is not None and enough and isinstance(slope, (int, float)):
        low, high = spec.calibration_slope
        if not low <= slope <= high:
            out.append(
                {
                    "kind": "calibration_slope_outside",
                    "detail": f"calibration slope {slope:.3f} outside [{low:g}, {high:g}]",
                }
            )
    if spec.max_psi is not None and drift:
        found = {f"feature {k!r}": v for k, v in (drift.get("features") or {}).items()}
        found["the score"] = {"psi": drift.get("score_psi"), "noise": drift.get("score_noise")}
        for what, entry in found.items():
            value, noise = entry.get("psi"), entry.get("noise")
            if isinstance(value, (int, float)) and value > spec.max_psi:
                alone = f" ({noise:.3f} expected from sampling alone)" if noise else ""
                detail = f"{what}: PSI {value:.3f} > {spec.max_psi:g}{alone}"
                out.append({"kind": "psi_above", "detail": detail})
    return out


def propose_update(
    config: Mapping[str, Any], *, version: str, today: date, spec: MonitoringSpec
) -> dict[str, Any]:
    """The continuous-learning study proposed from the deployed study's ``config``.

    Raises
    ------
    ConfigError
        If the proposal is not a valid study (names the field).
    """
    rounds = config.get("rounds")
    base = int(rounds) if isinstance(rounds, int) and rounds > 0 else 10
    proposal = {
        **dict(config),
        "name": f"{config.get('name', 'study')}-update-{today:%Y%m%d}",
        "init_model": version,
        "rounds": spec.update_rounds or max(1, base // 2),
    }
    StudyConfig.from_dict(proposal, source="proposed study")
    return proposal


def write_proposal(proposal: Mapping[str, Any], path: Path, *, reason: list[str]) -> Path:
    """Write the proposed study as YAML, with a header saying why and that it is a proposal."""
    import yaml

    header = [
        "# Proposed continuous-learning study (fedcare site feedback): NOT submitted.",
        f"# It fine-tunes from the deployed version {proposal['init_model']}; alerts:",
        *(f"#   - {r}" for r in reason),
        "# Review it, then the study's lead may submit it (`fedcare study submit`); the sites",
        "# approve its plan as any other.",
    ]
    body = yaml.safe_dump(dict(proposal), sort_keys=False, allow_unicode=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text("\n".join(header) + "\n" + body)
    tmp.replace(path)
    return path
