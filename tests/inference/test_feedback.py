"""``site feedback``: outcomes joined with logged predictions, post-deployment performance,
drift, small cells withheld, alerts and the proposed study (fedcare.inference.feedback)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.errors import DataError
from fedcare.evaluation.clinical import site_summary
from fedcare.inference.bundle import bundle_from_study, load_bundle, write_bundle
from fedcare.inference.feedback import PROPOSAL_FILE, join_outcomes, run_feedback
from fedcare.inference.monitor import PredictionLog, open_log_folder, write_reference
from fedcare.inference.predict import predict_file
from fedcare.inference.withhold import withhold_summary
from fedcare.records.study import StudyConfig

from .conftest import Trained

runner = CliRunner()
THRESHOLDS = {
    "min_auroc": 0.7,
    "max_psi": 0.25,
    "calibration_slope": [0.8, 1.25],
    "min_outcomes": 50,
}
SITE = "cleveland"


def deployed(trained: Trained, tmp_path: Path, *, age_shift: float = 0.0) -> tuple[Path, Any]:
    """A version folder of the trained model (with monitoring thresholds), its reference from
    the site's training rows and one logged ``site predict`` run on its test rows."""
    study = {**trained.study.model_dump(mode="json"), "monitoring": THRESHOLDS}
    files = bundle_from_study(
        study,
        params=dict(trained.result.model.params),
        task_arrays=trained.result.model.arrays,
        feature_names=trained.data.feature_names,
        input_shape=trained.data.sites[0].train.input_shape,
        task=trained.result["task"],
        card=trained.result["model_card"],
    )
    bundle = load_bundle(write_bundle(files, tmp_path / "exported"))
    site = trained.data.site(SITE)
    folder = open_log_folder(tmp_path / "heart-v1", bundle)
    write_reference(folder, bundle, site.train.X)
    frame = trained.frame(site).copy()  # the frame shares its array with the session's data
    frame["age"] = frame["age"].to_numpy() + age_shift
    frame.to_csv(tmp_path / "rows.csv", index=False)
    log = PredictionLog(folder, "run-1", bundle.features)
    predict_file(bundle, tmp_path / "rows.csv", tmp_path / "out.csv", id_column="patient", log=log)
    return folder, bundle


def outcomes(trained: Trained, path: Path, extra: int = 3) -> pd.DataFrame:
    site = trained.data.site(SITE)
    ids = trained.frame(site)["patient"].tolist() + [f"unknown-{i}" for i in range(extra)]
    df = pd.DataFrame({"mrn": ids, "died": [*site.test.y.astype(int).tolist(), *[1] * extra]})
    df.to_csv(path, index=False)
    return df


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)] + [value]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)] + [value]
    return [value]


def test_join_counts_unmatched_and_refuses_duplicates() -> None:
    rows, y, counts = join_outcomes(
        ["a", "b", None, "c"], ["c", "a", "z", None, "b"], np.array([1.0, 0.0, 1.0, 1.0, np.nan])
    )
    assert rows.tolist() == [3, 0] and y.tolist() == [1.0, 0.0]
    assert counts == {
        "labels": 3,
        "matched": 2,
        "unmatched_labels": 1,
        "unmatched_predictions": 1,
        "empty": 2,
        "unmatched_ids": ["z"],
    }
    with pytest.raises(DataError, match="outcomes file: one outcome per id: id 'a' appears 2"):
        join_outcomes(["a"], ["a", "a"], np.array([1.0, 0.0]))
    with pytest.raises(DataError, match=r"predicted in several runs.*id .a. appears 2 times"):
        join_outcomes(["a", "a"], ["a"], np.array([1.0]))


def test_feedback_performance_is_the_clinical_summary_of_the_matched_rows(
    trained: Trained, tmp_path: Path
) -> None:
    folder, bundle = deployed(trained, tmp_path)
    outcomes(trained, tmp_path / "outcomes.csv")
    result = run_feedback(
        folder,
        tmp_path / "outcomes.csv",
        id_column="mrn",
        label_column="died",
        rng=np.random.default_rng(7),
        bootstrap=50,
        site=SITE,
    )
    site = trained.data.site(SITE)
    n = len(site.test)
    spec = {"threshold": bundle.threshold, "bootstrap": 50, "bins": 10, "curve_bins": 100}
    expected = site_summary(
        "binary", site.test.y, trained.expected(site), spec=spec, rng=np.random.default_rng(7)
    )
    assert result.local["performance"] == expected
    monitoring = result.monitoring
    assert monitoring["performance"] == withhold_summary(expected, 5)
    assert monitoring["outcomes"] == {"n": n + 3, "matched": n, "unmatched_labels": None}
    assert result.local["counts"]["unmatched_labels"] == 3  # kept at the site only
    assert monitoring["predictions"]["n"] == n and monitoring["predictions"]["runs"] == 1
    assert monitoring["bundle_sha256"] == bundle.bundle_hash and monitoring["site"] == SITE
    assert set(monitoring["drift"]["features"]) == set(bundle.features)
    assert monitoring["drift"]["features"]["age"]["psi"] < 0.25
    on_disk = json.loads((folder / "monitoring.json").read_text())
    assert on_disk == json.loads(json.dumps(monitoring))
    assert json.loads(result.local_path.read_text())["counts"]["matched"] == n
    # aggregates only: no list as long as the rows, no id, no raw value
    text = (folder / "monitoring.json").read_text()
    assert all(not (isinstance(x, list) and len(x) >= n) for x in leaves(on_disk))
    assert (
        f"{SITE}-0" not in text
        and "unknown-0" not in text
        and "curve" not in on_disk["performance"]
    )


def test_small_cells_are_withheld(trained: Trained, tmp_path: Path) -> None:
    folder, _ = deployed(trained, tmp_path)
    df = outcomes(trained, tmp_path / "all.csv", extra=0)
    df.head(4).to_csv(tmp_path / "four.csv", index=False)
    result = run_feedback(
        folder,
        tmp_path / "four.csv",
        id_column="mrn",
        label_column="died",
        rng=np.random.default_rng(0),
        bootstrap=0,
    )
    assert result.monitoring["performance"] is None
    assert result.monitoring["outcomes"]["matched"] is None
    assert result.local["counts"]["matched"] == 4
    # a confusion cell under min_cell is withheld with its partner and what it gives away
    y = np.array([1] * 3 + [0] * 40 + [1] * 30 + [0] * 3)
    p = np.array([0.9] * 3 + [0.1] * 40 + [0.2] * 30 + [0.8] * 3)
    summary = site_summary("binary", y, p, spec={"bootstrap": 0}, rng=np.random.default_rng(0))
    assert summary["confusion"] == {"tp": 3, "fp": 3, "tn": 40, "fn": 30}
    shown = withhold_summary(summary, 5)
    assert shown is not None
    assert shown["confusion"] == {"tp": None, "fp": None, "tn": None, "fn": None}
    for name in ("accuracy", "sensitivity", "specificity", "ppv", "npv"):
        assert shown["metrics"][name]["value"] is None
    assert shown["metrics"]["auroc"] == summary["metrics"]["auroc"]
    hidden = [b for b in shown["calibration"]["bins"] if b["n"] is None]
    assert len(hidden) >= 2  # never exactly one (it would be the total minus the others)
    assert all(b["n"] is None or b["n"] == 0 or b["n"] >= 5 for b in shown["calibration"]["bins"])
    few_positives = site_summary(
        "binary",
        np.array([1] * 3 + [0] * 40),
        np.full(43, 0.5),
        spec={"bootstrap": 0},
        rng=np.random.default_rng(0),
    )
    assert withhold_summary(few_positives, 5) is None


def test_an_age_shift_raises_alerts_and_proposes_a_fine_tuning_study(
    trained: Trained, tmp_path: Path
) -> None:
    folder, _ = deployed(trained, tmp_path, age_shift=15.0)
    outcomes(trained, tmp_path / "outcomes.csv")
    now = datetime(2026, 12, 5, 3, 0, tzinfo=timezone.utc)
    result = run_feedback(
        folder,
        tmp_path / "outcomes.csv",
        id_column="mrn",
        label_column="died",
        rng=np.random.default_rng(1),
        bootstrap=0,
        now=now,
    )
    age = result.monitoring["drift"]["features"]["age"]
    assert age["status"] == "major" and age["psi"] > 1.0
    kinds = {a["kind"] for a in result.monitoring["alerts"]}
    assert "psi_above" in kinds
    assert any("feature 'age'" in a["detail"] for a in result.monitoring["alerts"])
    assert result.proposal == folder / PROPOSAL_FILE
    text = result.proposal.read_text()
    assert text.startswith("# Proposed continuous-learning study") and "NOT submitted" in text
    proposed = StudyConfig.from_dict(yaml.safe_load(text))
    assert proposed.init_model == "heart-v1"
    assert proposed.name == f"{trained.study.name}-update-20261205"
    assert proposed.rounds == max(1, trained.study.rounds // 2)
    assert proposed.dataset == trained.study.dataset and proposed.model == trained.study.model
    # no shift: no drift alert, no proposal
    calm = tmp_path / "calm"
    calm.mkdir()
    folder2, _ = deployed(trained, calm)
    quiet = run_feedback(
        folder2,
        tmp_path / "outcomes.csv",
        id_column="mrn",
        label_column="died",
        rng=np.random.default_rng(1),
        bootstrap=0,
    )
    assert not [a for a in quiet.monitoring["alerts"] if "age" in a["detail"]]


def test_feedback_errors_name_the_problem(trained: Trained, tmp_path: Path) -> None:
    folder, _ = deployed(trained, tmp_path)
    df = outcomes(trained, tmp_path / "outcomes.csv")
    args = {"rng": np.random.default_rng(0), "bootstrap": 0}
    with pytest.raises(DataError, match="no column 'outcome'"):
        run_feedback(
            folder, tmp_path / "outcomes.csv", id_column="mrn", label_column="outcome", **args
        )
    pd.concat([df, df.head(1)]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="id 'cleveland-0' appears 2 times"):
        run_feedback(folder, tmp_path / "dup.csv", id_column="mrn", label_column="died", **args)
    later = datetime.now(timezone.utc) + timedelta(days=1)
    with pytest.raises(DataError, match=r"no prediction logged .* since"):
        run_feedback(
            folder,
            tmp_path / "outcomes.csv",
            id_column="mrn",
            label_column="died",
            since=later,
            **args,
        )
    df.assign(died=2).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv"):
        run_feedback(folder, tmp_path / "bad.csv", id_column="mrn", label_column="died", **args)


def test_site_feedback_on_the_command_line(trained: Trained, tmp_path: Path) -> None:
    _, bundle = deployed(trained, tmp_path / "setup")  # for the exported bundle folder
    site = trained.data.site(SITE)
    frame = trained.frame(site)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    pd.DataFrame(site.train.X, columns=bundle.features).to_csv(tmp_path / "train.csv", index=False)
    folder = tmp_path / "monitor"
    exported = str(tmp_path / "setup" / "exported")
    predicted = runner.invoke(
        app,
        [
            "site",
            "predict",
            "--model",
            exported,
            "--input",
            str(tmp_path / "rows.csv"),
            "--out",
            str(tmp_path / "o.csv"),
            "--id-column",
            "patient",
            "--log-to",
            str(folder),
            "--json",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["log"].startswith(str(folder / "predictions"))
    ref = runner.invoke(
        app, ["site", "reference", "--model", str(folder), "--input", str(tmp_path / "train.csv")]
    )
    assert ref.exit_code == 0, ref.output
    assert f"reference of {len(site.train)} training rows" in ref.output
    outcomes(trained, tmp_path / "outcomes.csv")
    args = [
        "site",
        "feedback",
        "--model",
        str(folder),
        "--labels",
        str(tmp_path / "outcomes.csv"),
        "--id-column",
        "mrn",
        "--label-column",
        "died",
        "--bootstrap",
        "20",
    ]
    done = runner.invoke(app, [*args, "--json", "--site", SITE])
    assert done.exit_code == 0, done.output
    told = json.loads(done.stdout)
    assert told["monitoring"]["outcomes"]["matched"] == len(site.test)
    assert told["monitoring"]["drift"]["max_psi"] < 0.25
    # the 3-round model is under-confident on Cleveland (slope about 2.8): a real alert
    assert [a["kind"] for a in told["monitoring"]["alerts"]] == ["calibration_slope_outside"]
    assert told["proposal"] == str(folder / PROPOSAL_FILE)
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert "post-deployment performance" in plain.output and "auroc" in plain.output
    assert "drift (PSI" in plain.output and "monitoring summary:" in plain.output
    assert "ALERT calibration_slope_outside: calibration slope" in plain.output
    assert "proposed study (not submitted)" in plain.output
    missing = runner.invoke(
        app, [*args[:2], "--model", "heart-v9", *args[4:], "--state", str(tmp_path / "state")]
    )
    assert (
        missing.exit_code == 2 and "'heart-v9' is not in this site's model store" in missing.output
    )


def test_a_regression_model_gets_its_clinical_summary(tmp_path: Path) -> None:
    from fedcare.inference.bundle import build_bundle
    from fedcare.inference.monitor import log_predictions

    files = build_bundle(
        model={"kind": "torch", "task": "regression"},
        params={"w": np.zeros(1)},
        feature_names=["x"],
        input_shape=[1],
        preprocessing={},
        task="regression",
    )
    folder = open_log_folder(tmp_path / "reg", load_bundle(write_bundle(files, tmp_path / "b")))
    rng = np.random.default_rng(5)
    x = rng.normal(size=80)
    y = 2 * x + rng.normal(scale=0.5, size=80)
    ids = [f"p{i}" for i in range(80)]
    log_predictions(folder, "r1", ids, 2 * x, None, {"x": x})
    pd.DataFrame({"id": ids, "y": y}).to_csv(tmp_path / "y.csv", index=False)
    result = run_feedback(
        folder,
        tmp_path / "y.csv",
        id_column="id",
        label_column="y",
        rng=np.random.default_rng(2),
        bootstrap=30,
    )
    spec = {"threshold": 0.5, "bootstrap": 30, "bins": 10, "curve_bins": 100}
    expected = site_summary("regression", y, 2 * x, spec=spec, rng=np.random.default_rng(2))
    assert result.local["performance"] == expected
    assert result.monitoring["performance"] == {**expected, "withheld": []}
    assert "positive_rate" not in result.monitoring["predictions"]
    assert result.monitoring["drift"] is None  # no reference frozen
    assert result.monitoring["alerts"] == [] and result.proposal is None


def test_a_store_model_logs_by_default(trained: Trained, tmp_path: Path) -> None:
    folder, _ = deployed(trained, tmp_path)
    outcomes(trained, tmp_path / "outcomes.csv")
    args = [
        "site",
        "predict",
        "--model",
        str(folder / "bundle"),
        "--input",
        str(tmp_path / "rows.csv"),
        "--out",
        str(tmp_path / "o.csv"),
        "--id-column",
        "patient",
        "--json",
    ]
    quiet = runner.invoke(app, [*args, "--no-log"])
    assert quiet.exit_code == 0 and json.loads(quiet.stdout)["log"] is None
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["log"].startswith(str(folder / "predictions"))
    assert len(list((folder / "predictions").glob("*.parquet"))) == 2
    feedback = [
        "site",
        "feedback",
        "--model",
        str(folder),
        "--labels",
        str(tmp_path / "outcomes.csv"),
        "--id-column",
        "mrn",
        "--label-column",
        "died",
    ]
    refused = runner.invoke(app, feedback)
    assert refused.exit_code == 2
    assert "predicted in several runs; choose runs with --since" in refused.output
    bad = runner.invoke(app, [*feedback, "--since", "yesterday"])
    assert bad.exit_code == 2 and "'yesterday' is not a date" in bad.output


def test_the_site_id_comes_from_the_kit_the_agent_recorded(
    trained: Trained, tmp_path: Path
) -> None:
    from fedcare.site.stewardship import remember_kit
    from fedcare.transport.provisioning import create_federation

    fed = create_federation(
        tmp_path / "fed", name="t", sites=("bern",), coordinator_hosts=("127.0.0.1",)
    )
    remember_kit(tmp_path / "state", fed.site_kits["bern"])
    folder, _ = deployed(trained, tmp_path)
    outcomes(trained, tmp_path / "outcomes.csv")
    args = [
        "site",
        "feedback",
        "--model",
        str(folder),
        "--labels",
        str(tmp_path / "outcomes.csv"),
        "--id-column",
        "mrn",
        "--label-column",
        "died",
        "--bootstrap",
        "0",
        "--json",
    ]
    done = runner.invoke(app, [*args, "--state", str(tmp_path / "state")])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["monitoring"]["site"] == "bern"
    assert json.loads(runner.invoke(app, args).stdout)["monitoring"]["site"] is None
