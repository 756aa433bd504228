"""A study's training plan on this installation, and what the steward reads of it.

The plan record itself (content, canonical JSON, hash) is :mod:`fedcare.records.plan`; this
module fills it from a study: the local-training config the strategy sends and the site half of
the study's privacy mode (:mod:`fedcare.strategy.site_half`), with the code and dependency part
of this installation. The coordinator builds the plan here (called by ``strategy/driver.py``)
and sends it with every task; a site re-checks it (``fedcare.site.plans``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedcare.errors import ConfigError
from fedcare.packages.resolve import is_package_model, resolve_package_model
from fedcare.records.plan import TrainingPlan, local_code, local_dependencies, package_requires
from fedcare.strategy.site_half import (
    check_strategy_matches_plan,
    site_half_of_study,
    site_half_summary,
    site_train_config,
)

if TYPE_CHECKING:
    from fedcare.records.study import StudyConfig

__all__ = [
    "check_strategy_matches_study",
    "data_summary",
    "personal_summary",
    "plan_for_study",
    "plan_summary",
]


def plan_for_study(study: Any, *, with_code: bool = True) -> TrainingPlan:
    """The training plan of a :class:`~fedcare.records.study.StudyConfig` on this installation.

    ``with_code=False`` leaves the code and dependency part empty (it needs a known model kind),
    for checks of the parts that reach the sites.

    Raises
    ------
    ConfigError
        When the study's strategy or privacy settings cannot build (naming the field).
    """
    kind = str(study.model.get("kind", ""))
    model = dict(study.model)
    if is_package_model(model) and not _resolved(model):  # the plan binds the package's hash
        model = resolve_package_model(model)
    privacy = getattr(study, "privacy", None)
    return TrainingPlan(
        study=study.name,
        model=model,
        preprocessing=study.preprocessing.model_dump(),
        training=site_train_config(study),
        rounds=study.rounds,
        dataset=study.dataset.name,
        privacy_mode=str(getattr(privacy, "mode", "open")),
        epsilon=getattr(privacy, "epsilon", None),
        membership_inference=bool(getattr(privacy, "membership_inference", False)),
        site_half=site_half_of_study(study),
        validation=_validation(study),
        personalization=_personalization(study, kind),
        data=_data(study),
        code=local_code(kind) if with_code else {},
        dependencies=local_dependencies(kind, package_requires(model)) if with_code else {},
    )


def _validation(study: Any) -> dict[str, Any]:
    """The study's validation section as the plan carries it (empty when it reports nothing)."""
    spec = getattr(study, "validation", None)
    if spec is None or not spec.report:
        return {}
    section = dict(spec.model_dump(mode="json"))
    if section.get("validation_share") is None:  # unset: the plan (and its hash) as before
        section.pop("validation_share", None)
    return section


def _data(study: Any) -> dict[str, Any]:
    """How sites treat invalid rows, as the plan carries it (empty when unset: the plan and
    its hash as before)."""
    skip = getattr(getattr(study, "dataset", None), "skip_invalid_rows", None)
    return {} if skip is None else {"skip_invalid_rows": skip.model_dump(mode="json")}


def data_summary(data: Mapping[str, Any]) -> str:
    """How the site treats invalid rows, for the steward."""
    skip = data.get("skip_invalid_rows")
    if not isinstance(skip, Mapping):
        return "a row that cannot be read fails the task (naming the count)"
    return (
        f"skips up to {float(skip.get('max_fraction', 0)):.0%} invalid rows (unreadable or "
        "failing the schema's checks), counted by reason, reported and audited; only the "
        "counts leave the site; above that the task fails"
    )


def _personalization(study: Any, kind: str) -> dict[str, Any]:
    """The study's personalization section as the plan carries it (empty for ``none``).

    Raises
    ------
    ConfigError
        ``fedbn`` for a model kind that has no normalization layers.
    """
    spec = getattr(study, "personalization", None)
    if spec is None or spec.method == "none":
        return {}
    if spec.method == "fedbn" and kind not in ("torch", "package"):
        raise ConfigError(
            f"personalization fedbn keeps batch-normalization layers local; model kind {kind!r} "
            "has none (use finetune or ditto)"
        )
    section = dict(spec.model_dump(mode="json"))
    if section.get("validation_share") is None:  # unset: the plan (and its hash) as before
        section.pop("validation_share", None)
    return section


def _resolved(model: Mapping[str, Any]) -> bool:
    """A package spec already resolved (by hash, with what its manifest says), e.g. by the
    coordinator at submission: its plan needs no package store here (the coordinator keeps
    archives, not a store under the default root; sites verify the package themselves)."""
    ref = model.get("package")
    keys = {"name", "version", "task", "requires", "options"}
    return isinstance(ref, str) and ref.startswith("sha256:") and keys <= set(model)


def plan_summary(plan: TrainingPlan) -> str:
    """A readable summary of ``plan`` for the steward who approves it."""
    files = ", ".join(k.removeprefix("models/") for k in plan.code if k != "fedcare")
    lines = [
        f"study:         {plan.study}",
        f"plan hash:     {plan.hash}",
        f"dataset:       {plan.dataset}",
        *([f"invalid rows:  {data_summary(plan.data)}"] if plan.data else []),
        f"privacy mode:  {plan.privacy_mode}"
        + (f" (epsilon {plan.epsilon:g})" if plan.epsilon is not None else ""),
        f"model:         {_inline(plan.model)}",
        f"preprocessing: {_inline(plan.preprocessing)}",
        f"training:      {_inline(plan.training)}",
        f"site half:     {site_half_summary(plan.site_half)}",
        f"rounds:        {plan.rounds}",
        *(["outputs:       + membership-attack AUROC"] if plan.membership_inference else []),
        *(
            [f"outputs:       + {_validation_outputs(plan.validation, plan.model)}"]
            if plan.validation
            else []
        ),
        *(
            [f"personal:      {personal_summary(plan.personalization)}"]
            if plan.personalization
            else []
        ),
        f"code:          fedcare {plan.code.get('fedcare', '?')}; files {files}",
        f"dependencies:  {_inline(plan.dependencies)}",
    ]
    return "\n".join(lines)


def _validation_outputs(spec: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    """What the final evaluation returns besides the metrics, for the steward."""
    parts = [
        "clinical validation summary of the final model: confusion matrix at threshold "
        f"{spec.get('threshold')}, {spec.get('bins')}-bin calibration and "
        f"{spec.get('curve_bins')}-bin score counts, bootstrap intervals "
        f"({spec.get('bootstrap')} resamples)"
    ]
    groups = [str(g.get("name") or g.get("feature")) for g in spec.get("subgroups") or []]
    if groups:
        parts.append(f"subgroup counts by {', '.join(groups)} (cells under min_cell withheld)")
    if spec.get("importance"):
        parts.append("permutation importance (mean metric drop per feature)")
    parts.append("information matrix of linear models")
    saliency = spec.get("saliency")
    if isinstance(saliency, Mapping) and model.get("kind") == "torch":  # the site keeps it
        parts.append(
            f"image models: {saliency.get('method')} saliency maps of {saliency.get('images')} "
            "test images kept in the site's own report (not sent)"
        )
    return "; ".join(parts)


def personal_summary(spec: Mapping[str, Any]) -> str:
    """What the site trains and keeps for itself, and what it reports of it, for the steward."""
    method = spec.get("method")
    lr = f"lr {spec['lr']:g}" if spec.get("lr") else "the study's lr"
    if method == "finetune":
        what = (
            f"after the last round the site fine-tunes the final model on its training rows "
            f"({spec.get('epochs') or 1} epoch(s), {lr})"
        )
        if spec.get("validation_share"):
            what += (
                f", keeping the best pass by the loss on {spec['validation_share']:.0%} of its "
                "training rows held out (early stopping)"
            )
    elif method == "ditto":
        epochs = f"{spec['epochs']} epoch(s)" if spec.get("epochs") else "the study's schedule"
        what = (
            "Ditto: every training task also trains the site's own model towards the global one "
            f"(proximal weight lam={spec.get('lam')}, {epochs}, {lr}), kept between rounds"
        )
    else:
        what = (
            "FedBN: the site keeps its own batch-normalization parameters and statistics and "
            "sends no change to them"
        )
    return (
        f"{what}; the personal model stays at the site (never sent); outputs + its metrics on "
        "the site's test rows (personal_*)"
    )


def _inline(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "(none)"


def check_strategy_matches_study(strategy: Any, study: StudyConfig) -> None:
    """:func:`~fedcare.strategy.site_half.check_strategy_matches_plan` against ``study``'s plan
    (its parts that reach the sites: fit config and site half; the code part, which needs a
    known model kind, is left to :func:`plan_for_study`)."""
    plan = plan_for_study(study, with_code=False)
    check_strategy_matches_plan(strategy, plan)
