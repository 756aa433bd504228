"""What a site does with a task on its own data: train, evaluate, or report statistics.

Only aggregates leave: a model update (``local - global``), scalar metrics over the test rows,
or per-feature sums. The site keeps its own strategy state (SCAFFOLD's ``c_i``) per study, and
the personal model the plan's ``personalization`` section asks for (:mod:`fedcare.site.personal`),
of which only ``personal_*`` metrics over the test rows leave.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.aggregation.norm_bound import site_clip
from fedcare.analytics.answer import answer_task
from fedcare.analytics.disclosure import AnalyticsPolicy
from fedcare.analytics.moments import feature_moments
from fedcare.data.base import Dataset, SiteData
from fedcare.data.fingerprint import site_fingerprint
from fedcare.errors import ConfigError, ModelError, ValidationError
from fedcare.evaluation.membership import loss_attack_auroc
from fedcare.evaluation.metrics import compute_metrics
from fedcare.evaluation.validation import site_validation, validation_due
from fedcare.models.base import LocalTrainSpec, ModelAdapter
from fedcare.models.registry import build_model
from fedcare.models.task_config import spec_from_config
from fedcare.models.torch_offload import ParamOffload
from fedcare.privacy.mechanisms import system_rng
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply, Task
from fedcare.site.personal import (
    PersonalState,
    PersonalStore,
    ditto_step,
    fedbn_keys,
    fedbn_split,
    fedbn_start,
    finetune,
    personal_method,
    personal_metrics,
    personal_train_spec,
)
from fedcare.site.preprocess import LocalStats, Preprocessor
from fedcare.site.round_state import (
    for_round,
    load_round_state,
    round_state_path,
    save_round_state,
)
from fedcare.site.site_reports import saliency_report
from fedcare.site.train_checkpoint import discard_checkpoint, open_checkpoint, resume_info, task_key
from fedcare.site.update import consume_update

__all__ = ["SiteRuntime"]


def _isolation_info(adapter: ModelAdapter) -> dict[str, str]:
    """Reply info of a study package's task: how its code was isolated (``bwrap+uid:65534``,
    ``rlimits-only``; :class:`fedcare.models.package_runner.SandboxedPackage`)."""
    isolation = getattr(adapter, "isolation", None)
    return {} if not isinstance(isolation, str) else {"package_isolation": isolation}


def _dp_sgd_info(spec: LocalTrainSpec, num_rows: int) -> dict[str, str]:
    """Reply info of a DP-SGD round: its DP event as JSON (the study's accounting composes it)."""
    if spec.dp is None:
        return {}
    return {"dp_event": json.dumps(spec.dp.event(num_rows, spec).to_dict(), sort_keys=True)}


@dataclass(frozen=True)
class ControlState:
    """A site's SCAFFOLD control variate around its last training round.

    Keeping the value from before that round makes a retried round (a reply lost to a
    coordinator restart or a deadline) start from the same ``c_i`` as the first attempt.
    """

    round: int
    before: ArrayRecord
    after: ArrayRecord

    def for_round(self, round: int) -> ArrayRecord:
        value = for_round(self, round, "SCAFFOLD state")
        assert value is not None  # before and after are both set for SCAFFOLD
        return value


@dataclass
class SiteRuntime:
    """Runs tasks on one site's data. Holds per-study site state (SCAFFOLD control variates).

    With a ``state_dir`` the site state is saved after every change and read back on start, so
    a restarted site agent continues a study where it left off.
    """

    data: SiteData
    state_dir: Path | None = None
    controls: dict[str, ControlState] = field(default_factory=dict)
    analytics_policy: AnalyticsPolicy = field(default_factory=AnalyticsPolicy)
    #: A mapped dataset's harmonized table (schema variable names): analytics read it instead
    #: of the arrays (see :meth:`fedcare.site.config.DatasetEntry.prepared`).
    analytics_frame: pd.DataFrame | None = None
    #: The names of the dataset's features (columns of ``X``): subgroups name them.
    feature_names: tuple[str, ...] = ()
    #: Simulation only: DP-SGD noise then follows the task seed (reproducible); a real site
    #: draws it from OS entropy, since the coordinator knows every task seed.
    simulated: bool = False
    #: Builds the adapter of a task's model spec: a study package's code runs in-process in a
    #: simulation, in the sandboxed package runner at a deployed site.
    model_builder: Callable[[Mapping[str, Any]], ModelAdapter] = build_model
    #: Where reports for this site only go (saliency maps); default ``state_dir / "reports"``.
    report_dir: Path | None = None
    #: Seconds between training checkpoints of a fit task (:mod:`fedcare.site.train_checkpoint`;
    #: 0: none). The site's worker sets the site data file's value (default 60).
    checkpoint_every_s: float = 0.0
    #: The site's memory budget for large torch models (:mod:`fedcare.models.torch_offload`).
    param_offload: ParamOffload | None = None
    _shapes: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict, repr=False)
    _stats: LocalStats = field(default_factory=LocalStats, repr=False)  # of data.train
    #: Each study's personal model (Ditto's ``v_k``, FedBN's normalization arrays): it never
    #: leaves the site (:mod:`fedcare.site.personal`).
    personal: PersonalStore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.personal = PersonalStore(self.state_dir)

    def _control_path(self, study_id: str) -> Path | None:
        return round_state_path(self.state_dir, "control", study_id)

    def _load_control(self, study_id: str, round: int, like: ArrayRecord) -> ArrayRecord:
        state = self.controls.get(study_id)
        if state is None:
            saved = load_round_state(path := self._control_path(study_id))
            if saved is not None and path is not None:
                round_, before, after = saved
                state = ControlState(round_, like.zeros_like() if before is None else before, after)
                like.check_structure(state.after, what=f"saved control variate {path.name}")
                self.controls[study_id] = state
        return like.zeros_like() if state is None else state.for_round(round)

    def _save_control(self, study_id: str, state: ControlState) -> None:
        self.controls[study_id] = state
        save_round_state(self._control_path(study_id), state.round, state.before, state.after)

    def _prepared(self, task: Task) -> tuple[ModelAdapter, Preprocessor]:
        model_spec = task.plan.get("model")
        if not isinstance(model_spec, Mapping):
            raise ConfigError("task plan has no 'model' spec")
        adapter = self.model_builder(model_spec)
        spec = task.plan.get("preprocessing", {})
        prep = Preprocessor.for_task(spec, task.arrays, self.data.train, stats=self._stats)
        return adapter, prep

    def _check_params(self, adapter: ModelAdapter, params: ArrayRecord, spec: Any) -> None:
        key = json.dumps(spec, sort_keys=True, default=str)
        shapes = self._shapes.get(key)
        if shapes is None:  # built once per model spec: a large model is costly to initialise
            shapes = self._shapes[key] = adapter.param_shapes(self.data.train.input_shape)
        got = params.shapes
        if list(got) != list(shapes) or got != shapes:
            bad = next((k for k in shapes if got.get(k) != shapes[k]), None)
            detail = (
                f"array {bad!r} has shape {got.get(bad)}, expected {shapes[bad]}"
                if bad is not None
                else f"arrays {sorted(got)} differ from {sorted(shapes)}"
            )
            raise ValidationError(f"global params do not fit the model: {detail}")
        if not params.all_finite():
            raise ValidationError("global params contain NaN or infinite values")

    def provenance(self, task: Task) -> dict[str, str]:
        """Reply info naming the data used: its fingerprint and the number of train rows."""
        name = str(task.plan.get("dataset", ""))
        return {
            "dataset_fingerprint": site_fingerprint(self.data, name),
            "num_rows": str(len(self.data.train)),
        }

    def fit(self, task: Task) -> Reply:
        """Train on the site's rows; the study's training checkpoint goes with the reply."""
        try:
            return self._fit(task)
        finally:  # a reply (or an error reply) is produced: nothing is left to resume
            discard_checkpoint(self.state_dir, task.study_id)

    def _fit(self, task: Task) -> Reply:
        adapter, prep = self._prepared(task)
        self._check_params(adapter, task.params, task.plan.get("model"))
        train = prep.apply(self.data.train)
        spec = spec_from_config(task.config)
        rng = np.random.default_rng(int(task.config.get("seed", 0)))
        if spec.dp is not None and not self.simulated:
            rng = system_rng()  # DP-SGD noise nobody else can reproduce
        scaffold = task.config.get("algorithm") == "scaffold"
        if scaffold:  # the control variates (a full model each) only for SCAFFOLD
            if "control" not in task.arrays:
                raise ValidationError("a SCAFFOLD task must carry the server 'control' variate")
            c = task.arrays["control"]
            c_i = self._load_control(task.study_id, task.round, task.params.zeros_like())
            spec = replace(spec, correction=c - c_i)
        method = personal_method(task.plan)
        saved = self.personal.get(task.study_id) if method != "none" else None
        start, personal_info = task.params, {}
        bn_keys: tuple[str, ...] = ()
        if method == "fedbn":  # this site's own normalization layers, kept from its last round
            bn_keys = fedbn_keys(task.params)
            start = fedbn_start(task.params, PersonalState.start(saved, task.round))
        provenance = self.provenance(task)
        every = 0.0 if spec.dp is not None else self.checkpoint_every_s  # DP-SGD: not resumed
        key = partial(task_key, task, start, spec, provenance["dataset_fingerprint"])
        checkpoint = open_checkpoint(self.state_dir, task, every, key)
        run = replace(spec, checkpoint=checkpoint, offload=self.param_offload)
        result = adapter.fit(start, train, run, rng)
        if scaffold:  # before the update is computed into the trained params
            drift = (task.params - result.params).scale(1.0 / (result.num_steps * spec.lr))
        # FedBN keeps the trained normalization arrays: their update needs its own arrays
        delta = (
            result.params - task.params
            if method == "fedbn"
            else consume_update(result, task.params)
        )
        if method == "fedbn":
            delta, own = fedbn_split(delta, result.params, bn_keys)
            before = PersonalState.start(saved, task.round)
            self.personal.put(task.study_id, PersonalState(task.round, before, own))
        elif method == "ditto":  # a failure here costs the site its v_k update, not the round
            try:
                self._ditto(task, adapter, train, spec, saved)
            except ModelError as err:
                personal_info = {"personalization_error": str(err)}
        arrays = delta
        if scaffold:
            c_new = (c_i - c) + drift
            arrays = delta.prefixed("delta").merged((c_new - c_i).prefixed("control"))
            self._save_control(task.study_id, ControlState(task.round, c_i, c_new))
        metrics = {**result.metrics, "num_steps": float(result.num_steps)}
        return Reply(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind="fit",
            # the site half of norm bounding (the pipeline is the plan's, see site/plans.py)
            arrays=site_clip(task.pipeline, arrays),
            num_samples=result.num_samples,
            metrics=metrics,
            info={
                **provenance,
                **_dp_sgd_info(spec, len(train)),
                **_isolation_info(adapter),
                **personal_info,
                **resume_info(checkpoint),  # resumed_from_step, after a restart
            },
        )

    def evaluate(self, task: Task) -> Reply:
        adapter, prep = self._prepared(task)
        self._check_params(adapter, task.params, task.plan.get("model"))
        if "split" in task.config:  # metrics over training rows are no output a plan approves
            raise ConfigError(
                f"evaluate task config split={task.config['split']!r}: a site evaluates on its "
                "test rows only"
            )
        data: Dataset = prep.apply(self.data.test)
        scores = adapter.predict(task.params, data.X)
        metrics = {
            **compute_metrics(adapter.task, data, scores),
            "loss": adapter.loss(task.params, data),
        }
        if _attack_now(task, adapter.task):
            members = prep.apply(self.data.train)
            rng = np.random.default_rng(int(task.config.get("seed", 0)))
            metrics["mia_loss_auroc"] = loss_attack_auroc(adapter, task.params, members, data, rng)
        info = {**self.provenance(task), **_isolation_info(adapter)}
        try:  # a personal model that fails to train costs its metrics, not the evaluation
            personal = self._personal_model(task, adapter, prep)
            if personal is not None:
                metrics.update(personal_metrics(adapter, personal, data))
        except ModelError as err:
            info["personalization_error"] = str(err)
        if validation_due(task.plan, task.round):
            info["validation"] = self._validation(task, adapter, data, scores)
            root = self.report_dir or (self.state_dir and self.state_dir / "reports")
            info.update(saliency_report(task, adapter, data, scores, root))  # the site's only
        return Reply(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind="evaluate",
            num_samples=len(data),
            metrics=metrics,
            info=info,
        )

    def _ditto(
        self,
        task: Task,
        adapter: ModelAdapter,
        train: Dataset,
        spec: LocalTrainSpec,
        saved: PersonalState | None,
    ) -> None:
        """Ditto: train this site's own model towards the round's global one and keep it."""
        section = task.plan["personalization"]
        before = PersonalState.start(saved, task.round)
        start = task.params if before is None else before
        task.params.check_structure(start, what="saved personal model")
        own_spec = personal_train_spec(spec, section, default_epochs=None)
        rng = np.random.default_rng([int(task.config.get("seed", 0)), 9])
        lam = float(section.get("lam", 0.1))
        own = ditto_step(adapter, start, task.params, train, own_spec, lam, rng)
        self.personal.put(task.study_id, PersonalState(task.round, before, own))

    def _personal_model(
        self, task: Task, adapter: ModelAdapter, prep: Preprocessor
    ) -> ArrayRecord | None:
        """The personal model to evaluate beside the global one, if the plan asks for one:
        the global model fine-tuned (at the final round), Ditto's ``v_k`` or the global model
        with this site's normalization layers (once the site has trained)."""
        method = personal_method(task.plan)
        if method == "finetune":
            if task.round != task.plan.get("rounds"):
                return None
            training = task.plan.get("training", {})
            spec = personal_train_spec(
                spec_from_config(training), task.plan["personalization"], default_epochs=1
            )
            rng = np.random.default_rng([int(task.config.get("seed", 0)), 9])
            share = task.plan["personalization"].get("validation_share")
            train = prep.apply(self.data.train)
            return finetune(adapter, task.params, train, spec, rng, validation_share=share)
        saved = self.personal.get(task.study_id) if method in ("ditto", "fedbn") else None
        if saved is None:
            return None
        if method == "fedbn":
            return fedbn_start(task.params, saved.after)
        task.params.check_structure(saved.after, what="saved personal model")
        return saved.after

    def _validation(
        self, task: Task, adapter: ModelAdapter, data: Dataset, scores: np.ndarray
    ) -> str:
        """The final model's clinical validation summary on the test rows, as JSON (only
        aggregates; see :mod:`fedcare.evaluation.validation`)."""
        summary = site_validation(
            adapter.task,
            data,
            np.asarray(scores),
            raw_X=np.asarray(self.data.test.X),
            feature_names=self.feature_names,
            spec=task.plan["validation"],
            min_cell=self.analytics_policy.min_cell,
            rng=np.random.default_rng([int(task.config.get("seed", 0)), 15]),
            predict=lambda X: np.asarray(adapter.predict(task.params, X)),
            model=task.plan.get("model"),
            params=task.params,
        )
        return json.dumps(summary, sort_keys=True, allow_nan=False)

    def stats(self, task: Task) -> Reply:
        moments = feature_moments(np.asarray(self.data.train.X, dtype=np.float64))
        return Reply(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind="stats",
            arrays=moments,
            num_samples=len(self.data.train),
            info=self.provenance(task),
        )

    def analytics(self, task: Task) -> Reply:
        """Federated statistics for ``task.plan["analytics"]``, suppressed by this site's
        ``analytics_policy`` (see :mod:`fedcare.analytics.answer`)."""
        seed = int(task.config.get("seed", 0))
        arrays, metrics = answer_task(
            self.data, task.plan, seed, self.analytics_policy, frame=self.analytics_frame
        )
        return Reply(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind="analytics",
            arrays=arrays,
            metrics=metrics,
        )


def _attack_now(task: Task, model_task: str) -> bool:
    """A plan that asks for membership inference gets it on the final model's test evaluation."""
    plan, final = task.plan, task.round == task.plan.get("rounds")
    return plan.get("membership_inference") is True and final and model_task == "binary"
