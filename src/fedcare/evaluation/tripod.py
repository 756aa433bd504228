"""The TRIPOD+AI section of a model card: what fedcare knows, and what the authors must write.

TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) is the 27-item reporting checklist for
studies that develop or evaluate a clinical prediction model, with regression or machine
learning. fedcare ran the study, so it can fill in the items that are facts of the run: the
data sources and sites, sample sizes and outcome events per site, predictors, missing-data
handling, the model and how it was trained (strategy, rounds, privacy mode), the performance
measures with their intervals, calibration, subgroup gaps and the kind of validation. Items
that need knowledge fedcare does not have (clinical context, target population, eligibility,
ethics approval, ...) are listed under ``to_write`` with what the item asks for.

:func:`tripod_section` (pure, JSON-able output) builds the card's ``"tripod"`` block::

    {"guideline": "TRIPOD+AI (Collins et al., BMJ 2024;385:e078378)",
     "filled": [{"item": "5a", "topic": "Data sources", "text": "..."}, ...],
     "to_write": [{"item": "3a", "topic": "Healthcare context", "text": "..."}, ...]}

:func:`tripod_view` reads such a block back for the HTML report (defensively).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedcare.evaluation.clinical_format import (
    METRIC_LABELS,
    fmt_ci,
    meta_ci,
    meta_pi,
    number_or_none,
)

__all__ = ["GUIDELINE", "TO_WRITE", "tripod_section", "tripod_view"]

GUIDELINE = "TRIPOD+AI (Collins et al., BMJ 2024;385:e078378)"

#: ``(item, topic, what the authors must write)`` for the items fedcare cannot know.
TO_WRITE: tuple[tuple[str, str, str], ...] = (
    (
        "1",
        "Title",
        "identify the study as developing and/or evaluating a prediction model, "
        "its target population, outcome and modelling approach",
    ),
    ("2", "Abstract", "structured summary (TRIPOD+AI for Abstracts)"),
    (
        "3a",
        "Healthcare context",
        "the diagnostic or prognostic setting, why the model is needed, existing models",
    ),
    (
        "3b",
        "Target population and intended use",
        "who the model is for, where in the care pathway it is used, and by whom (intended users)",
    ),
    (
        "3c",
        "Health inequalities",
        "known inequalities between groups relevant to the outcome "
        "and how the study addresses them",
    ),
    ("4", "Objectives", "development, evaluation or both"),
    (
        "5b",
        "Dates",
        "start and end of participant accrual at each site; end of follow-up (prognostic models)",
    ),
    ("6a", "Setting", "type of care (primary, secondary, ...) and location of each centre"),
    ("6b", "Eligibility", "inclusion and exclusion criteria of participants"),
    ("6c", "Treatments", "treatments received, where relevant"),
    (
        "7",
        "Data preparation",
        "data quality checks and cleaning done before the data reached "
        "fedcare, and whether they were the same at every site",
    ),
    ("8", "Outcome", "outcome definition, how and when it was assessed, blinding of the assessors"),
    (
        "9",
        "Predictors",
        "definition of each predictor, how and when measured, blinding; why these predictors",
    ),
    ("10", "Sample size", "how the study size was arrived at (justification)"),
    (
        "15",
        "Model output",
        "how predictions are presented to users and why the decision threshold was chosen",
    ),
    ("17", "Ethical approval", "the ethics committee(s) and approval references, consent"),
    (
        "18",
        "Open science",
        "funding, conflicts of interest, protocol, registration, data and code availability",
    ),
    ("19", "Patient and public involvement", "how patients and the public were involved"),
    (
        "20",
        "Participants",
        "flow of participants, their characteristics per site, and "
        "differences between development and evaluation data",
    ),
    ("24", "Model updating", "any updating of the model after its evaluation"),
    ("25", "Interpretation", "overall interpretation, including fairness"),
    (
        "26",
        "Limitations",
        "limitations of the study (non-representative data, small sites, sample size, ...)",
    ),
    (
        "27",
        "Usability and implications",
        "handling of poor-quality or missing input data at "
        "use, what users need to know, next steps",
    ),
)


_NO_FAIRNESS = (
    "how fairness was assessed (declare subgroups under validation.subgroups for fedcare to "
    "report performance and gaps per group)"
)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _meta(entry: Any) -> str | None:
    """Random-effects estimate (CI), prediction interval and I² of a meta-analysis block."""
    m = _map(entry)
    text = meta_ci(m)
    if text == "–":
        return None
    if (pi := meta_pi(m)) != "–":
        text += f", prediction interval {pi}"
    if (i2 := number_or_none(m.get("i2"))) is not None:
        text += f", I² {100 * i2:.0f}%"
    return text


def _sample_sizes(sites: Mapping[str, Any], per_site: Mapping[str, Any]) -> str:
    parts = []
    for site in sorted(set(sites) | set(per_site)):
        train = [n for n in _map(sites.get(site)).get("num_rows") or [] if isinstance(n, int)]
        summary = _map(per_site.get(site))
        conf = _map(summary.get("confusion"))
        text = f"{site}: {train[-1]} training rows" if train else f"{site}:"
        if isinstance(summary.get("n"), int):
            text += f", {summary['n']} test rows"
            if isinstance(conf.get("tp"), int) and isinstance(conf.get("fn"), int):
                text += f" ({conf['tp'] + conf['fn']} with the outcome)"
        parts.append(text)
    return "; ".join(parts)


def _training(study: Mapping[str, Any]) -> str:
    strategy = _map(study.get("strategy"))
    training = _map(study.get("training"))
    privacy = _map(study.get("privacy"))
    model = _map(study.get("model"))
    options = ", ".join(f"{k}={v}" for k, v in sorted(_map(strategy.get("options")).items()))
    text = (
        f"model {model.get('kind', 'unknown')}; federated training with strategy "
        f"{strategy.get('name', 'fedavg')}{f' ({options})' if options else ''}, "
        f"{study.get('rounds')} rounds, fraction of sites per round {study.get('fraction', 1.0)}"
    )
    settings = ", ".join(f"{k}={training[k]}" for k in sorted(training) if training[k] is not None)
    if settings:
        text += f"; local training {settings}"
    text += f"; privacy mode {privacy.get('mode', 'open')}"
    if privacy.get("epsilon") is not None:
        text += f" (ε budget {privacy['epsilon']})"
    return text


def _missing(study: Mapping[str, Any]) -> str:
    pre = _map(study.get("preprocessing"))
    impute, scale = pre.get("impute", "none"), pre.get("scale", "none")
    if impute == "mean":
        source = (
            "the pooled mean from a federated statistics round (no row left a site)"
            if scale == "global"
            else "each site's own training mean"
        )
        text = f"missing predictor values imputed with {source}"
    else:
        text = "no imputation (impute: none): rows with missing predictors are not supported"
    return text + f"; scaling: {scale}"


def _validation_type(study: Mapping[str, Any], per_site: Mapping[str, Any]) -> str:
    text = (
        "internal validation on each site's held-out test split "
        f"({len(per_site) or 'each'} sites), evaluated at the site; pooled and per-site results"
    )
    if _map(study.get("validation")).get("leave_one_site_out"):
        text += (
            "; external validation by leave-one-site-out (train on N−1 sites, test on the "
            "held-out one)"
        )
    return text


def _performance(overall: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    metrics = _map(overall.get("metrics"))
    parts = [
        f"{METRIC_LABELS.get(str(name), str(name))} {text}"
        for name in metrics
        if (text := fmt_ci(metrics.get(name))) != "–"
    ]
    if not parts:
        return None
    nir = number_or_none(overall.get("no_information_rate"))
    text = "overall (pooled test rows): " + "; ".join(parts)
    if nir is not None:
        text += f"; no-information rate {nir:.3f}"
    b = spec.get("bootstrap")
    return text + (f"; site intervals from {b} bootstrap resamples" if b else "")


def _calibration(overall: Mapping[str, Any]) -> str | None:
    cal, meta = _map(overall.get("calibration")), _map(overall.get("meta"))
    parts = []
    for key, label in (("brier", "Brier"), ("ece", "ECE")):
        if (v := number_or_none(cal.get(key))) is not None:
            parts.append(f"{label} {v:.3f}")
    for key, label in (("calibration_slope", "slope"), ("calibration_intercept", "intercept")):
        if (text := _meta(meta.get(key))) is not None:
            parts.append(f"{label} (random effects across sites) {text}")
    return "; ".join(parts) or None


def _fairness(subgroups: Mapping[str, Any]) -> str | None:
    parts = []
    for name, group in _map(subgroups.get("groups")).items():
        gaps = _map(_map(group).get("gaps"))
        eod = number_or_none(gaps.get("equalized_odds_difference"))
        cal = number_or_none(gaps.get("calibration_difference"))
        text = f"{name}: equalized odds difference " + ("–" if eod is None else f"{eod:.3f}")
        text += ", calibration difference " + ("–" if cal is None else f"{cal:.3f}")
        parts.append(text)
    if not parts:
        return None
    return "; ".join(parts) + f" (cells under min_cell {subgroups.get('min_cell')} withheld)"


def tripod_section(
    *,
    study: Mapping[str, Any],
    sites: Mapping[str, Any],
    validation: Mapping[str, Any] | None = None,
    dataset: Mapping[str, Any] | None = None,
    feature_names: Sequence[str] = (),
    task: str | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """The card's TRIPOD+AI block (module docstring).

    Parameters
    ----------
    study:
        The study config as a dict.
    sites:
        The participating sites as the card lists them (``num_rows`` of their training data).
    validation:
        The model's clinical validation (``per_site``, ``overall``, ``subgroups``), if any.
    dataset:
        ``name``, ``description``, ``citation`` of the data source, if known.
    feature_names, task, created:
        The predictors in the model's order, the task and when the model was made.
    """
    v = _map(validation)
    per_site, overall = _map(v.get("per_site")), _map(v.get("overall"))
    ds = _map(dataset)
    name = ds.get("name") or _map(study.get("dataset")).get("name")
    source = f"dataset {name}" + (f": {ds['description']}" if ds.get("description") else "")
    if ds.get("citation"):
        source += f" (citation: {ds['citation']})"
    site_names = sorted(set(sites) | set(per_site))
    filled: list[tuple[str, str, str | None]] = [
        ("5a", "Data sources", source),
        ("5b", "Dates (model)", f"model trained and recorded {created}" if created else None),
        (
            "6a",
            "Sites",
            f"{len(site_names)} sites: {', '.join(site_names)}; data stayed at "
            "each site (federated)"
            if site_names
            else None,
        ),
        (
            "8",
            "Outcome (task)",
            f"task {task or overall.get('task') or 'unknown'}: the label the "
            "data source defines (5a)",
        ),
        (
            "9a",
            "Predictors",
            f"{len(feature_names)} predictors: {', '.join(feature_names)}"
            if feature_names
            else None,
        ),
        ("10, 21", "Sample size and outcome events", _sample_sizes(sites, per_site) or None),
        ("11", "Missing data", _missing(study)),
        ("12", "Model and training", _training(study)),
        ("16", "Validation", _validation_type(study, per_site)),
        (
            "23a",
            "Performance (with intervals)",
            _performance(overall, _map(study.get("validation"))),
        ),
        ("23a", "Calibration", _calibration(overall)),
        (
            "23b",
            "Heterogeneity across sites (AUROC)",
            _meta(_map(overall.get("meta")).get("auroc")),
        ),
        ("14", "Fairness (subgroups)", _fairness(_map(v.get("subgroups")))),
    ]
    known = {item for item, _, text in filled if text}
    return {
        "guideline": GUIDELINE,
        "filled": [{"item": i, "topic": t, "text": x} for i, t, x in filled if x],
        "to_write": [{"item": i, "topic": t, "text": x} for i, t, x in TO_WRITE]
        + ([] if "14" in known else [{"item": "14", "topic": "Fairness", "text": _NO_FAIRNESS}]),
    }


def tripod_view(tripod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The card's TRIPOD+AI block as the report shows it, or ``None`` when absent."""

    def rows(key: str) -> list[dict[str, str]]:
        return [
            {k: str(_map(r).get(k) or "") for k in ("item", "topic", "text")}
            for r in tripod.get(key) or []
            if isinstance(r, Mapping)
        ]

    filled, to_write = rows("filled"), rows("to_write")
    if not filled and not to_write:
        return None
    return {
        "guideline": str(tripod.get("guideline") or GUIDELINE),
        "filled": filled,
        "to_write": to_write,
    }
