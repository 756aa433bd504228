"""``fedcare site reports``: lists the site-only saliency reports under a state folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedcare.cli.main import app
from fedcare.evaluation.saliency import Saliency
from fedcare.evaluation.saliency_page import write_saliency_report
from fedcare.site.site_reports import saliency_folder

runner = CliRunner()


def write_one(state: Path, study_id: str) -> Path:
    images = np.random.default_rng(0).uniform(size=(2, 1, 6, 6))
    saliency = Saliency(images, images - 0.5, np.ones(2), np.zeros(2), "integrated_gradients", 8)
    captions = [{"label": "1", "score": 0.7, "explained": "logit"}] * 2
    folder = saliency_folder(state / "xrays" / "reports", study_id)
    return write_saliency_report(
        folder, saliency, study_id=study_id, site_id="a", task="binary", captions=captions
    )


def test_site_reports_lists_each_report_with_its_page(tmp_path: Path) -> None:
    index = write_one(tmp_path, "pneumonia/federated")
    done = runner.invoke(app, ["site", "reports", "--state", str(tmp_path), "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.stdout)
    assert [(r["study_id"], r["images"], r["path"]) for r in listed] == [
        ("pneumonia/federated", 2, str(index))
    ]
    text = runner.invoke(app, ["site", "reports", "--state", str(tmp_path)])
    assert text.exit_code == 0 and "pneumonia/federated" in text.output
    assert str(index) in text.output.replace("\n", "")


def test_site_reports_says_when_there_are_none(tmp_path: Path) -> None:
    done = runner.invoke(app, ["site", "reports", "--state", str(tmp_path / "missing")])
    assert done.exit_code == 0 and "no site-only reports" in done.output
