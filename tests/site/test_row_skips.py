"""A study that may skip invalid rows (issue 16.5): a site with 5 % corrupted rows.

The site runs its real path: governance mods (audit, policy, approval of the plan's hash) over
the worker's dataset handlers (:func:`fedcare.site.worker.build_apps`, the site runtime), on a
mapped CSV table of the fixture federation with 12 of 240 rows corrupted: 5 unparseable ages,
4 out-of-range glucose values and 3 lines with one field too many.
"""

from __future__ import annotations

import hashlib
import html
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedcare.data.cdm.fixtures import fixture_federation
from fedcare.evaluation.model_card import participants
from fedcare.evaluation.report import render_report
from fedcare.records import ArrayRecord
from fedcare.records.invalid_rows import InvalidRows
from fedcare.records.messages import Reply, Task
from fedcare.records.plan import PLAN_KEYS, TrainingPlan
from fedcare.records.study import StudyConfig
from fedcare.site.approvals import ApprovalStore
from fedcare.site.config import SiteDataConfig
from fedcare.site.governance import SiteGovernance
from fedcare.site.mods import chain
from fedcare.site.policy import SitePolicy
from fedcare.site.worker import TaskWorker, build_apps
from fedcare.strategy.plan import plan_for_study, plan_summary
from fedcare.transport.codec import decode_reply, encode_reply

from .governance_helpers import Recorder

CDM = Path(__file__).resolve().parents[2] / "examples" / "cdm" / "fixture"
LATER = datetime.now(timezone.utc) + timedelta(days=1)
ROWS = 240
BAD_AGE, BAD_GLUCOSE = "NOTANUMBER-7731", "98765.4"  # mg/dL: far above the schema's range
REASONS = {
    "out-of-range value in 'glucose'": 4,
    "unparseable value in 'age'": 5,
    "unreadable line (wrong number of fields)": 3,
}
UNREADABLE = "unreadable line (wrong number of fields)"


def _site(tmp_path: Path, *, bad_ages: int = 5, bad_glucose: int = 4, bad_lines: int = 3) -> Path:
    """A site data file serving south's table with the corrupted rows; its path."""
    tables = fixture_federation(np.random.default_rng(3), rows_per_site=ROWS, bad_values=False)
    table = tables["south"]
    table.loc[10 : 9 + bad_ages, "age"] = BAD_AGE
    table.loc[100 : 99 + bad_glucose, "glucose"] = BAD_GLUCOSE
    lines = table.to_csv(index=False).splitlines()
    for row in range(200, 200 + bad_lines):  # one field too many (line 0 is the header)
        lines[row + 1] += ",7"
    (tmp_path / "south.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    entry = {
        "source": {"kind": "csv", "path": "south.csv", "text": True},
        "schema": str(CDM / "schema.yaml"),
        "mapping": str(CDM / "sites" / "south.yaml"),
    }
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"fixture": entry}}), encoding="utf-8")
    return path


def _study(skip: float | None) -> StudyConfig:
    dataset: dict[str, Any] = {"name": "fixture"}
    if skip is not None:
        dataset["skip_invalid_rows"] = {"max_fraction": skip}
    return StudyConfig.from_dict(
        {
            "name": "cardio",
            "dataset": dataset,
            "model": {"kind": "logistic"},
            "preprocessing": {"impute": "mean", "scale": "local"},
            "training": {"epochs": 1, "lr": 0.1, "batch_size": 16},
            "rounds": 2,
        }
    )


def _task(plan: TrainingPlan, kind: str = "fit") -> Task:
    params = ArrayRecord({"weight": np.zeros(4), "bias": np.array(0.0)})
    config = {**plan.training, "seed": 3} if kind == "fit" else {"seed": 3}
    return Task(
        study_id="st-1", round=1, site_id="south", kind=kind,  # type: ignore[arg-type]
        params=params, config=config, plan=plan.to_task_plan(),
    )  # fmt: skip


def _governed(tmp_path: Path, plan: TrainingPlan) -> tuple[Recorder, Any]:
    """The site's governance over the worker's handlers, the plan approved."""
    config = SiteDataConfig.from_yaml(_site(tmp_path))
    apps = build_apps("south", config, tmp_path / "state")
    approvals = ApprovalStore.in_state_dir(tmp_path / "state")
    approvals.approve(plan.study, plan.hash, LATER)
    audit = Recorder()
    gov = SiteGovernance(SitePolicy.from_dict({}), approvals, audit)
    handler = chain(
        gov.mods({"fixture": ROWS}), lambda t: gov.execute(t, apps["fixture"], lambda: None)
    )
    return audit, handler


def test_the_site_skips_5_percent_corrupted_rows_counted_by_reason(tmp_path: Path) -> None:
    plan = plan_for_study(_study(0.05))
    audit, handler = _governed(tmp_path, plan)
    reply = handler(_task(plan))
    assert reply.ok, reply.error
    invalid = InvalidRows.from_info(reply.info["invalid_rows"])
    assert invalid == InvalidRows(ROWS, REASONS, skipped=True)
    assert invalid.count == 12 and invalid.fraction == pytest.approx(0.05)
    # trained on the 228 valid rows' training split (the test split holds ~30 %)
    assert 150 <= reply.num_samples <= 165
    evaluated = handler(_task(plan, "evaluate"))
    assert evaluated.ok and InvalidRows.from_info(evaluated.info["invalid_rows"]).count == 12
    assert evaluated.num_samples + reply.num_samples == ROWS - 12
    skipped = [d for e, d in audit.entries if e == "rows-skipped"]
    assert len(skipped) == 2 and skipped[0]["reasons"] == REASONS
    assert skipped[0] | {"reasons": None} == {
        "task_id": skipped[0]["task_id"], "dataset": "fixture", "rows": ROWS, "invalid": 12,
        "skipped": True, "reasons": None,
    }  # fmt: skip


def test_only_counts_travel_on_the_wire(tmp_path: Path) -> None:
    plan = plan_for_study(_study(0.05))
    _, handler = _governed(tmp_path, plan)
    reply = handler(_task(plan))
    payload = encode_reply(reply)
    for raw in (BAD_AGE, BAD_GLUCOSE, ",7"):
        assert raw.encode() not in payload
    info = json.loads(decode_reply(payload).info["invalid_rows"])
    assert info == {"rows": ROWS, "invalid": 12, "skipped": True, "reasons": REASONS}


def test_without_the_option_the_task_fails_naming_the_count(tmp_path: Path) -> None:
    plan = plan_for_study(_study(None))
    audit, handler = _governed(tmp_path, plan)
    reply = handler(_task(plan))
    assert reply.error is not None and reply.error.kind == "data-check-failed"
    assert f"3 of {ROWS} rows could not be read ({UNREADABLE}: 3)" in reply.error.message
    assert "invalid_rows" not in reply.info and "rows-skipped" not in audit.events


def test_without_the_option_too_many_invalid_values_fail_with_their_count(
    tmp_path: Path,
) -> None:
    config = SiteDataConfig.from_yaml(_site(tmp_path, bad_ages=13, bad_glucose=0, bad_lines=0))
    plan = plan_for_study(_study(None))
    reply = build_apps("south", config, tmp_path / "state")["fixture"](_task(plan))
    assert reply.error is not None and reply.error.kind == "data-check-failed"
    assert f"required variable 'age': 13 of {ROWS} values invalid (5.4%" in reply.error.message
    # the same table under the option: the 13 rows are left out and the task runs
    skipping = plan_for_study(_study(0.06))
    reply = build_apps("south", config, tmp_path / "state2")["fixture"](_task(skipping))
    assert reply.ok, reply.error
    assert InvalidRows.from_info(reply.info["invalid_rows"]).reasons == {
        "unparseable value in 'age'": 13
    }


def test_above_max_fraction_the_task_fails_naming_count_and_fraction(tmp_path: Path) -> None:
    plan = plan_for_study(_study(0.04))
    audit, handler = _governed(tmp_path, plan)
    reply = handler(_task(plan))
    assert reply.error is not None and reply.error.kind == "invalid-rows"
    message = reply.error.message
    assert f"12 of {ROWS} rows are invalid (5.0%), more than the 4.0%" in message
    assert "unparseable value in 'age': 5" in message
    failed = audit.last("rows-invalid")
    assert failed["invalid"] == 12 and failed["skipped"] is False
    assert "rows-skipped" not in audit.events


def test_the_plan_hashes_the_option_and_keeps_old_hashes_without_it() -> None:
    old_keys = [k for k in PLAN_KEYS if k not in ("data", "personalization")]
    plan = plan_for_study(_study(None))
    assert "data" not in plan.content()
    canonical = json.dumps(
        {k: plan.content()[k] for k in old_keys}, sort_keys=True, separators=(",", ":")
    )
    assert plan.hash == hashlib.sha256(canonical.encode()).hexdigest()  # as before the option
    skipping = plan_for_study(_study(0.05))
    assert skipping.content()["data"] == {"skip_invalid_rows": {"max_fraction": 0.05}}
    assert skipping.hash != plan.hash
    assert TrainingPlan.from_task_plan(skipping.to_task_plan()).hash == skipping.hash
    old = {k: v for k, v in plan.to_task_plan().items() if k != "data"}
    assert TrainingPlan.from_task_plan(old).hash == plan.hash
    assert "skips up to 5% invalid rows" in plan_summary(skipping)
    assert "invalid rows" not in plan_summary(plan)
    with pytest.raises(Exception, match="max_fraction"):
        _study(0.0)


def test_the_round_record_and_report_show_the_counts() -> None:
    info = InvalidRows(ROWS, REASONS, skipped=True).to_info()
    history = [
        {"round": r, "fit": {"site_info": {"south": {"invalid_rows": info}, "north": {}}}}
        for r in (1, 2)
    ]
    sites, _ = participants(history)
    assert sites["south"]["invalid_rows"]["invalid"] == 12
    assert "invalid_rows" not in sites["north"]
    page = html.unescape(render_report({"history": history}))
    assert (
        "south skipped 12 of 240 rows (out-of-range value in 'glucose': 4, "
        "unparseable value in 'age': 5, unreadable line (wrong number of fields): 3)"
    ) in page


@pytest.mark.slow
def test_the_worker_subprocess_skips_and_reports(tmp_path: Path) -> None:
    config = SiteDataConfig.from_yaml(_site(tmp_path))
    worker = TaskWorker("south", config, tmp_path / "state", time_limit=60)
    try:
        plan = plan_for_study(_study(0.05))
        reply: Reply = worker.run(_task(plan))
        strict = worker.run(_task(plan_for_study(_study(None))))
    finally:
        worker.stop()
    assert reply.ok, reply.error
    assert InvalidRows.from_info(reply.info["invalid_rows"]).reasons == REASONS
    assert strict.error is not None and "3 of 240 rows could not be read" in strict.error.message


def test_a_simulated_study_skips_as_the_sites_would(tmp_path: Path) -> None:
    from fedcare.simulation.run import run_simulation

    _site(tmp_path)  # south.csv: 12 of 240 rows corrupted
    tables = fixture_federation(np.random.default_rng(4), rows_per_site=ROWS, bad_values=False)
    tables["north"].to_csv(tmp_path / "north.csv", index=False)
    mappings = {name: str(CDM / "sites" / f"{name}.yaml") for name in ("north", "south")}
    sites = {s: {"source": str(tmp_path / f"{s}.csv"), "mapping": m} for s, m in mappings.items()}
    options = {"schema": str(CDM / "schema.yaml"), "sites": sites}
    base = _study(0.05).model_dump()
    study = StudyConfig.from_dict(
        {**base, "dataset": {**base["dataset"], "name": "cdm", "options": options}, "rounds": 1}
    )
    result = run_simulation(study)
    counts = result["dataset"]["invalid_rows"]
    assert counts["south"] == {"rows": ROWS, "invalid": 12, "skipped": True, "reasons": REASONS}
    assert counts["north"]["invalid"] == 0
    assert result["site_sizes"]["south"]["train"] < result["site_sizes"]["north"]["train"]
    page = html.unescape(render_report(result))
    assert "south skipped 12 of 240 rows (out-of-range value in 'glucose': 4" in page
    assert "north skipped 0 of 240 rows" in page
    strict = study.model_copy(
        update={"dataset": study.dataset.model_copy(update={"skip_invalid_rows": None})}
    )
    refused = run_simulation(strict)
    assert refused["sites"] == ["north"]  # south's unreadable lines fail its data check


def test_the_site_describes_a_dataset_a_skipping_study_can_use(tmp_path: Path) -> None:
    described = SiteDataConfig.from_yaml(_site(tmp_path)).describe()["fixture"]
    assert described["data_check"]["passed"] is False  # the unreadable lines, as configured
    assert described["num_train"] + described["num_test"] == ROWS - 12
    assert [c["name"] for c in described["schema"]["columns"]] == ["age", "sex_1", "glucose", "sbp"]
