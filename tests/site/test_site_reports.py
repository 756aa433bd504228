"""Saliency maps at a site (fedcare.site.site_reports): written into the site's own folder on the
final evaluation of an image model, never into the reply that goes on the wire."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedcare.data.base import Dataset, FederatedDataset, SiteData
from fedcare.records import ArrayRecord, Task
from fedcare.records.validation_spec import ValidationSpec
from fedcare.site.app import SiteApp
from fedcare.site.site_reports import list_site_reports, saliency_folder
from fedcare.transport.codec import decode_reply, encode_reply

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

MODEL = {"kind": "torch", "architecture": "cnn_small", "channels": [4], "hidden": 8}
SIDE = 12


def image_site(site_id: str = "a", seed: int = 0) -> SiteData:
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(60, 1, SIDE, SIDE)).astype(np.float32)
    y = (rng.random(60) < 0.4).astype(np.float64)
    X[y == 1, 0, :4, :4] += 1.0
    return SiteData(site_id, Dataset(X[:30], y[:30]), Dataset(X[30:], y[30:]))


def final_evaluation(model: dict, validation: dict, params: ArrayRecord) -> Task:
    plan = {"model": model, "validation": validation, "rounds": 3}
    return Task("study/x", 3, "a", "evaluate", params, {"seed": 4}, plan=plan)


def cnn_params() -> ArrayRecord:
    from fedcare.models.registry import build_model

    return build_model(MODEL).init_params((1, SIDE, SIDE), np.random.default_rng(0))


def test_image_model_writes_the_report_at_the_site_and_nothing_on_the_wire(tmp_path) -> None:
    params = cnn_params()
    spec = ValidationSpec(bootstrap=20).model_dump(mode="json")
    reply = SiteApp(image_site(), state_dir=tmp_path)(final_evaluation(MODEL, spec, params))
    assert reply.ok, reply.error
    folder = saliency_folder(tmp_path / "reports", "study/x")
    pngs = sorted(folder.glob("image-*.png"))
    assert len(pngs) == 8 and (folder / "index.html").is_file()
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "Site-only report" in (folder / "index.html").read_text()
    assert [r["study_id"] for r in list_site_reports(tmp_path)] == ["study/x"]

    wire = encode_reply(reply)
    back = decode_reply(wire)
    assert set(back.info) == {"dataset_fingerprint", "num_rows", "validation", INFO}
    assert back.info[INFO] == "8"  # how many images the site-only report holds, nothing more
    assert len(back.arrays) == 0 and "saliency" not in json.loads(back.info["validation"])
    assert b"\x89PNG" not in wire and b"image-0" not in wire and str(tmp_path).encode() not in wire
    # the same evaluation without saliency differs on the wire by that one entry only
    off = {**spec, "saliency": None}
    plain = SiteApp(image_site())(final_evaluation(MODEL, off, params))
    assert INFO not in plain.info
    assert 0 < len(wire) - len(encode_reply(plain)) <= len(INFO) + 8
    pixels = sum(p.stat().st_size for p in pngs)
    assert len(wire) < pixels / 4  # the images (compressed) are far larger than the reply


INFO = "saliency_site_report"


def test_saliency_is_only_for_the_final_evaluation_with_the_report_on(tmp_path) -> None:
    params = cnn_params()
    spec = ValidationSpec(bootstrap=0, saliency={"images": 2, "method": "gradient"})
    task = final_evaluation(MODEL, spec.model_dump(mode="json"), params)
    earlier = Task("study/x", 2, "a", "evaluate", params, {"seed": 4}, plan=task.plan)
    app = SiteApp(image_site(), state_dir=tmp_path)
    assert INFO not in app(earlier).info
    assert not (tmp_path / "reports").exists()
    reply = app(task)
    assert reply.info[INFO] == "2"
    folder = saliency_folder(tmp_path / "reports", "study/x")
    assert json.loads((folder / "report.json").read_text())["method"] == "gradient"


def test_tabular_model_writes_nothing(tmp_path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = (X[:, 0] > 0).astype(float)
    site = SiteData("a", Dataset(X[:30], y[:30]), Dataset(X[30:], y[30:]))
    params = ArrayRecord({"weight": np.array([1.0, 0.0, 0.0]), "bias": np.array(0.0)})
    spec = ValidationSpec(bootstrap=0).model_dump(mode="json")
    reply = SiteApp(site, state_dir=tmp_path)(final_evaluation({"kind": "logistic"}, spec, params))
    assert reply.ok, reply.error
    assert "validation" in reply.info and INFO not in reply.info
    assert "saliency_note" not in reply.info
    assert list(tmp_path.rglob("*.png")) == [] and not (tmp_path / "reports").exists()


def test_a_failing_saliency_is_a_note_not_a_failed_evaluation(tmp_path, monkeypatch) -> None:
    import fedcare.evaluation.saliency as saliency

    def broken(*args, **kwargs):
        raise RuntimeError(f"disk full at {tmp_path}")

    monkeypatch.setattr(saliency, "attribute", broken)
    spec = ValidationSpec(bootstrap=0).model_dump(mode="json")
    reply = SiteApp(image_site(), state_dir=tmp_path)(final_evaluation(MODEL, spec, cnn_params()))
    assert reply.ok, reply.error
    assert reply.metrics["n"] == 30 and "validation" in reply.info
    assert reply.info["saliency_note"] == "saliency not written: RuntimeError"  # no path
    assert INFO not in reply.info


def test_simulation_writes_each_sites_report_under_the_output_folder(tmp_path) -> None:
    from fedcare.records.study import StudyConfig
    from fedcare.simulation.run import run_simulation

    sites = (image_site("a", 0), image_site("b", 1))
    ds = FederatedDataset("patches", "binary", sites)
    study = StudyConfig.model_validate(
        {
            "name": "patches",
            "dataset": {"name": "patches"},
            "model": MODEL,
            "training": {"epochs": 1, "lr": 0.01, "batch_size": 10, "optimizer": "adam"},
            "rounds": 1,
            "min_sites": 2,
            "baselines": {"local": False, "pooled": False},
            "validation": {"bootstrap": 0, "saliency": {"images": 2, "steps": 8}},
        }
    )
    results = run_simulation(study, dataset=ds, site_reports=tmp_path / "sites")
    assert set(results["validation"]["federated"]["per_site"]) == {"a", "b"}
    for site in ("a", "b"):
        found = list(list_site_reports(tmp_path / "sites" / site))
        assert [(r["site_id"], r["images"]) for r in found] == [(site, 2)]
        assert found[0]["study_id"] == "patches/federated"  # the training study id, as deployed
