"""A study: what to train, on which federation, how, for how many rounds.

Study files are YAML, validated by pydantic; any error names the file, the field and the
problem. ``plan()`` is the part that travels to sites with every task (model and
preprocessing), the training plan a data steward approves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedcare.errors import ConfigError
from fedcare.records.aggregation_spec import AggregationSpec
from fedcare.records.compression_spec import CompressionSpec
from fedcare.records.config_file import read_yaml, validate_config, with_base_dir
from fedcare.records.dp_spec import DpSpec
from fedcare.records.monitoring_spec import MonitoringSpec
from fedcare.records.personalization_spec import PersonalizationSpec
from fedcare.records.secagg_spec import SecAggSpec
from fedcare.records.validation_spec import ValidationSpec

__all__ = [
    "TASK_DEADLINE_FLOOR_S",
    "TASK_DEADLINE_PER_EPOCH_S",
    "BaselineSpec",
    "DatasetSpec",
    "PreprocessingSpec",
    "PrivacySpec",
    "SkipInvalidRowsSpec",
    "StrategySpec",
    "StudyConfig",
    "TrainingSpec",
]

#: A task's default deadline is ``max(floor, per_epoch * training.epochs)`` seconds unless the
#: study sets ``round_timeout``. The floor covers a site's default task time limit (600 s)
#: plus the model's download and upload; every task ends by its deadline whatever a site does.
TASK_DEADLINE_FLOOR_S = 1800.0
TASK_DEADLINE_PER_EPOCH_S = 300.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SkipInvalidRowsSpec(_Strict):
    """A site may leave out rows it cannot read or whose values fail the schema's checks, up
    to ``max_fraction`` of its rows; they are counted by reason, reported with every reply and
    audited at the site (:mod:`fedcare.site.row_skips`). Above it the task fails."""

    max_fraction: float = Field(gt=0, le=1)


class DatasetSpec(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    #: Unset (the default): a site with an unreadable row fails the task, naming the count.
    skip_invalid_rows: SkipInvalidRowsSpec | None = None


class StrategySpec(_Strict):
    name: str = "fedavg"
    options: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(_Strict):
    """Local training per round at each site."""

    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    lr: float = Field(default=0.1, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    l2: float = Field(default=0.0, ge=0)

    def as_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PreprocessingSpec(_Strict):
    impute: Literal["mean", "none"] = "none"
    scale: Literal["none", "local", "global"] = "none"


class PrivacySpec(_Strict):
    """The study's privacy mode (see DESIGN.md) and the epsilon it declares, if any."""

    mode: Literal["open", "secure", "private", "encrypted"] = "open"
    epsilon: float | None = Field(default=None, gt=0)
    #: DP layers, local DP-SGD and accounting (fedcare.records.dp_spec; fedcare.privacy.study).
    dp: DpSpec | None = None
    #: Run membership-inference attacks on the trained model and report their AUROC.
    membership_inference: bool = False
    #: SecAgg+ neighbour count and threshold (fedcare.records.secagg_spec; default: per round).
    secagg: SecAggSpec | None = None

    @model_validator(mode="after")
    def _secagg_needs_masking(self) -> PrivacySpec:
        if self.secagg is not None and self.mode not in ("secure", "private"):
            raise ValueError(
                f"privacy.secagg sets secure aggregation, which privacy mode {self.mode!r} does "
                "not use (only 'secure' and 'private' mask updates); remove it or change the mode"
            )
        return self


class BaselineSpec(_Strict):
    local: bool = False
    pooled: bool = False
    cross_site: bool = True


class StudyConfig(_Strict):
    """A whole study, as read from a study file."""

    name: str
    dataset: DatasetSpec
    model: dict[str, Any]
    preprocessing: PreprocessingSpec = Field(default_factory=lambda: PreprocessingSpec())
    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec())
    training: TrainingSpec = Field(default_factory=lambda: TrainingSpec())
    rounds: int = Field(default=10, ge=1)
    fraction: float = Field(default=1.0, gt=0, le=1)
    min_sites: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    evaluate_every: int = Field(default=1, ge=0)
    round_timeout: float | None = Field(default=None, gt=0)
    #: Deadline-bound rounds: once ``min_sites`` sites replied, wait at most this many seconds
    #: more for the others, then close the round (its open tasks expire; a late reply is
    #: refused and recorded, never aggregated). ``None``: wait for every site or the deadline
    #: (``task_deadline_s``). Needs a ``round_timeout`` no shorter than it when set in
    #: simulation, where no other deadline applies.
    round_grace_s: float | None = Field(default=None, ge=0)
    baselines: BaselineSpec = Field(default_factory=lambda: BaselineSpec())
    privacy: PrivacySpec = Field(default_factory=lambda: PrivacySpec())
    #: Version id of a registered model to start from (continuous learning); its parent.
    init_model: str | None = Field(default=None, min_length=1, max_length=128)
    #: Robust aggregation layers, outermost first (see fedcare.records.aggregation_spec).
    aggregation: AggregationSpec = Field(default_factory=list)
    #: How sites compress their updates on the wire (fedcare.records.compression_spec).
    compression: CompressionSpec = Field(default_factory=lambda: CompressionSpec())
    #: Seconds a deployed study waits for its plan's approval at the sites (default 24 h):
    #: while every missing reply is ``plan-not-approved`` the study stays ``running``, says
    #: whom it awaits, and asks again; after this long it fails naming the sites.
    approval_wait: float = Field(default=86400.0, gt=0)
    #: The clinical validation report of the final model (fedcare.records.validation_spec).
    validation: ValidationSpec = Field(default_factory=lambda: ValidationSpec())
    #: The model each site keeps for itself (fedcare.records.personalization_spec).
    personalization: PersonalizationSpec = Field(default_factory=lambda: PersonalizationSpec())
    #: Alert thresholds of the deployed model (fedcare.records.monitoring_spec).
    monitoring: MonitoringSpec = Field(default_factory=lambda: MonitoringSpec())

    @property
    def task_deadline_s(self) -> float:
        """Seconds a deployed task (and each stage of a round) waits for its reply.

        ``round_timeout`` when the study sets it; otherwise ``max(TASK_DEADLINE_FLOOR_S,
        TASK_DEADLINE_PER_EPOCH_S * training.epochs)``. A round proceeds at the deadline with
        the replies it has, if at least ``min_sites`` answered. (Simulation runs its sites one
        after another in one process and applies only an explicit ``round_timeout``.)
        """
        if self.round_timeout is not None:
            return self.round_timeout
        return max(TASK_DEADLINE_FLOOR_S, TASK_DEADLINE_PER_EPOCH_S * self.training.epochs)

    @field_validator("model")
    @classmethod
    def _model_has_kind(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "kind" not in value:
            raise ValueError("model needs a 'kind' (logistic, cox, sklearn, torch or package)")
        if value["kind"] == "package" and not isinstance(value.get("package"), str):
            raise ValueError(
                "a package model needs 'package': a package folder, a .fcpkg archive or "
                "sha256:<hash>"
            )
        return value

    @model_validator(mode="after")
    def _grace_within_deadline(self) -> StudyConfig:
        if self.round_grace_s is None:
            return self
        if self.privacy.mode in ("secure", "private", "encrypted"):
            raise ValueError(
                f"round_grace_s {self.round_grace_s} with privacy mode {self.privacy.mode!r}: "
                "its multi-stage sum needs every stage of a round to reach the same sites; "
                "deadline-bound rounds run in mode 'open' only, or remove round_grace_s"
            )
        if self.round_timeout is not None and self.round_grace_s >= self.round_timeout:
            raise ValueError(
                f"round_grace_s {self.round_grace_s} is not shorter than round_timeout "
                f"{self.round_timeout}: the round would always close at its deadline first"
            )
        return self

    @model_validator(mode="after")
    def _personal_without_dp(self) -> StudyConfig:
        private = self.privacy.mode == "private" or self.privacy.dp is not None
        if self.personalization.active and private:
            raise ValueError(
                f"personalization {self.personalization.method!r} with differential privacy: "
                "a personal model trains on the site's rows without DP noise, so its metrics "
                "fall outside the study's epsilon; set personalization.method to 'none'"
            )
        return self

    def plan(self) -> dict[str, Any]:
        """What travels to the sites: the model spec and preprocessing."""
        return {"model": dict(self.model), "preprocessing": self.preprocessing.model_dump()}

    def with_overrides(self, **changes: Any) -> StudyConfig:
        """A copy with top-level fields replaced (validated again)."""
        return StudyConfig.from_dict({**self.model_dump(), **changes})

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "study") -> StudyConfig:
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        return validate_config(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        path = Path(path)
        data = read_yaml(path, "study file")
        config = cls.from_dict(data, source=str(path))
        package = config.model.get("package")
        if (
            config.model.get("kind") == "package"
            and isinstance(package, str)
            and not package.startswith("sha256:")
        ):  # a package named by relative path is found from the study file's folder
            where = (path.parent / package).resolve()
            config = config.model_copy(update={"model": {**config.model, "package": str(where)}})
        # dataset files named by relative paths (e.g. dataset 'cdm') are found from this folder
        options = with_base_dir(config.dataset.name, config.dataset.options, path.parent)
        if options == config.dataset.options:
            return config
        return config.model_copy(
            update={"dataset": config.dataset.model_copy(update={"options": options})}
        )
