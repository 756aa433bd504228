"""The report shows each site's global, personal and local model side by side."""

from __future__ import annotations

from fedcare.evaluation.personal import personalization_summary
from fedcare.evaluation.report import render_report
from fedcare.evaluation.report_personal import personalization_view

PER_SITE = {
    "a": {"accuracy": 0.7, "personal_accuracy": 0.8, "n": 10.0},
    "<b>": {"accuracy": 0.6, "personal_accuracy": 0.9, "n": 30.0},
}


def test_the_view_lines_up_models_per_site_and_averages_over_sites() -> None:
    results = {
        "metrics": ["accuracy"],
        "personalization": personalization_summary(
            "ditto", PER_SITE, local={"a": {"accuracy": 0.5, "n": 10.0}}
        ),
    }
    view = personalization_view(results)
    assert view["method"] == "ditto" and view["models"] == ["global", "personal", "local"]
    assert view["rows"][1] == ("a", 10, [[0.7], [0.8], [0.5]])
    assert abs(view["mean"][0][0] - 0.65) < 1e-12 and abs(view["mean"][1][0] - 0.85) < 1e-12
    page = render_report(results)
    assert "Personalized models (ditto)" in page
    assert "&lt;b&gt;" in page and "<b>" not in page.split("personalization")[1][:4000]


def test_no_block_no_section() -> None:
    assert personalization_view({}) == {}
    assert "Personalized models" not in render_report({"metrics": ["accuracy"]})
