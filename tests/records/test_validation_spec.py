"""The study's ``validation`` section: parsed strictly, carried and hashed in the plan."""

from __future__ import annotations

import pytest

from fedcare.errors import ConfigError
from fedcare.records.plan import TrainingPlan
from fedcare.records.study import StudyConfig
from fedcare.records.validation_spec import ValidationSpec
from fedcare.strategy.plan import plan_for_study, plan_summary

BASE = {
    "name": "v",
    "dataset": {"name": "heart-disease"},
    "model": {"kind": "logistic"},
    "rounds": 2,
}


def test_the_shorthand_turns_on_leave_one_site_out_and_keeps_the_defaults() -> None:
    study = StudyConfig.from_dict({**BASE, "validation": "leave_one_site_out"})
    assert study.validation.leave_one_site_out
    assert study.validation == ValidationSpec(leave_one_site_out=True)
    assert study.validation.report and study.validation.bootstrap == 200


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"bins": 10, "curve_bins": 95}, "multiple of bins"),
        ({"subgroups": [{"feature": "age", "bands": [60, 50]}]}, "strictly increasing"),
        ({"subgroups": [{"feature": "sex"}, {"feature": "sex"}]}, "names must differ"),
        ({"threshold": 1.0}, "threshold"),
        ({"bootstrap": 10_000}, "bootstrap"),
        ({"boostrap": 10}, "boostrap"),
        ({"saliency": {"method": "occlusion"}}, "integrated_gradients"),
        ({"saliency": {"images": 0}}, "images"),
    ],
)
def test_a_bad_section_is_refused_naming_the_field(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StudyConfig.from_dict({**BASE, "validation": section})


def test_the_plan_binds_the_outputs_a_steward_approves() -> None:
    study = StudyConfig.from_dict(
        {**BASE, "validation": {"subgroups": [{"feature": "sex"}], "importance": True}}
    )
    plan = plan_for_study(study, with_code=False)
    assert plan.validation["subgroups"] == [{"feature": "sex", "bands": None, "name": None}]
    summary = plan_summary(plan)
    assert "clinical validation summary" in summary
    assert "subgroup counts by sex" in summary and "permutation importance" in summary
    other = plan_for_study(study.with_overrides(validation={"bootstrap": 100}), with_code=False)
    assert other.hash != plan.hash  # another output is another plan
    off = plan_for_study(study.with_overrides(validation={"report": False}), with_code=False)
    assert off.validation == {} and "clinical validation" not in plan_summary(off)


def test_a_plan_stored_before_the_section_existed_still_reads() -> None:
    plan = plan_for_study(StudyConfig.from_dict(BASE), with_code=False)
    old = {k: v for k, v in plan.to_task_plan().items() if k not in ("validation", "plan_hash")}
    assert TrainingPlan.from_task_plan(old).validation == {}


def test_saliency_is_on_by_default_off_with_false_and_named_for_torch_plans_only() -> None:
    assert ValidationSpec().saliency is not None and ValidationSpec().saliency.images == 8
    off = StudyConfig.from_dict({**BASE, "validation": {"saliency": False}})
    assert off.validation.saliency is None
    assert StudyConfig.from_dict({**BASE, "validation": {"saliency": True}}).validation.saliency
    torch = {**BASE, "model": {"kind": "torch", "architecture": "cnn_small"}}
    summary = plan_summary(plan_for_study(StudyConfig.from_dict(torch), with_code=False))
    assert "saliency maps of 8 test images kept in the site's own report (not sent)" in summary
    tabular = plan_summary(plan_for_study(StudyConfig.from_dict(BASE), with_code=False))
    assert "saliency" not in tabular
    plain = plan_for_study(StudyConfig.from_dict(torch), with_code=False)
    torch_off = {**torch, "validation": {"saliency": False}}
    assert plan_for_study(StudyConfig.from_dict(torch_off), with_code=False).hash != plain.hash
