import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy
import pytest

import fedcare
from fedcare.errors import ConfigError
from fedcare.records.plan import TrainingPlan, local_code, model_code_files
from fedcare.site.plans import Refusal, check_task_plan
from fedcare.strategy.plan import plan_summary
from fedcare.strategy.site_half import site_pipeline_for

from .governance_helpers import TRAINING, plan, task

MODELS = Path(fedcare.__file__).parent / "models"


def test_hash_is_the_sha256_of_the_canonical_content() -> None:
    p = plan()
    canonical = json.dumps(p.content(), sort_keys=True, separators=(",", ":")).encode()
    assert p.hash == hashlib.sha256(canonical).hexdigest()
    assert len(p.hash) == 64
    assert "study" not in p.content()  # approvals are per study; the recipe is the hash


def test_any_change_to_the_recipe_changes_the_hash() -> None:
    base = plan().hash
    changed = {
        plan(training={**TRAINING, "lr": 0.06}).hash,
        plan(rounds=6).hash,
        plan(preprocessing={"impute": "none", "scale": "local"}).hash,
        plan(privacy={"mode": "secure"}).hash,
        plan(dataset={"name": "other"}).hash,
        plan(model={"kind": "cox"}).hash,
    }
    assert base not in changed and len(changed) == 6
    assert plan(name="another-study").hash == base


def test_code_part_hashes_the_adapter_files_actually_used() -> None:
    p = plan()
    assert p.code["fedcare"] == fedcare.__version__
    assert p.dependencies["numpy"] == numpy.__version__
    assert "torch" not in p.dependencies
    for name in model_code_files("logistic"):
        expected = hashlib.sha256((MODELS / name).read_bytes()).hexdigest()
        assert p.code[f"models/{name}"] == expected
    assert "models/cox.py" not in local_code("logistic")
    assert "models/cox.py" in local_code("cox")


def test_round_trips_through_the_task_plan() -> None:
    p = plan(privacy={"mode": "open", "epsilon": 2.5})
    again = TrainingPlan.from_task_plan(json.loads(json.dumps(p.to_task_plan())))
    assert again == p and again.hash == p.hash and again.epsilon == 2.5


def test_summary_names_what_the_steward_approves() -> None:
    text = plan_summary(plan())
    for needle in (plan().hash, "heart", "lr=0.05", "logistic.py", "numpy="):
        assert needle in text


def test_a_consistent_plan_passes_the_site_check() -> None:
    checked = check_task_plan(task())
    assert isinstance(checked, TrainingPlan) and checked.hash == plan().hash


def test_content_changed_under_the_declared_hash_is_refused() -> None:
    tampered = {**plan().to_task_plan(), "rounds": 50}
    refusal = check_task_plan(task(task_plan=tampered))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-hash-mismatch"


def test_other_code_than_the_site_runs_is_refused_naming_the_file() -> None:
    p = plan()
    other = replace(p, code={**p.code, "models/logistic.py": "0" * 64})
    refusal = check_task_plan(task(task_plan=other.to_task_plan()))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-code-mismatch"
    assert "models/logistic.py" in refusal.message and "heart" in refusal.message
    old_numpy = replace(p, dependencies={**p.dependencies, "numpy": "1.0.0"})
    refusal = check_task_plan(task(task_plan=old_numpy.to_task_plan()))
    assert isinstance(refusal, Refusal) and "numpy" in refusal.message


def test_a_task_config_that_changes_the_recipe_is_refused() -> None:
    fit = {**plan().training, "seed": 1}
    refusal = check_task_plan(task(config={**fit, "lr": 0.5}))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-config-mismatch"
    assert "lr=0.5" in refusal.message and "0.05" in refusal.message
    assert isinstance(check_task_plan(task("evaluate", config={"seed": 4})), TrainingPlan)


@pytest.mark.parametrize(
    ("kind", "change", "needle"),
    [
        ("fit", {"prox_mu": 1000.0}, "prox_mu=1000.0 (plan: not set)"),
        ("fit", {"algorithm": "scaffold"}, "algorithm='scaffold' (plan: 'fedavg')"),
        ("fit", {"dp_noise_multiplier": 0.0}, "dp_noise_multiplier=0.0 (plan: not set)"),
        ("fit", {"epochs": None}, "epochs missing (plan: 1)"),
        ("evaluate", {"split": "train"}, "split='train' (plan: not set)"),
        ("evaluate", {"split": "test"}, "split='test' (plan: not set)"),
        ("stats", {"lr": 9.0}, "lr=9.0 (plan: not set)"),
    ],
)
def test_any_config_the_plan_does_not_fix_is_refused(
    kind: str, change: dict[str, Any], needle: str
) -> None:
    base = {**plan().training, "seed": 1} if kind == "fit" else {"seed": 1}
    config = {k: v for k, v in {**base, **change}.items() if v is not None}
    refusal = check_task_plan(task(kind, config=config))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-config-mismatch"
    assert needle in refusal.message and kind in refusal.message


def test_strategy_options_and_dp_sgd_are_part_of_the_plan() -> None:
    prox = plan(strategy={"name": "fedprox", "options": {"mu": 0.1}})
    assert prox.training["prox_mu"] == 0.1 and "prox_mu=0.1" in plan_summary(prox)
    dp = {"local_dp_sgd": {"noise_multiplier": 1.0, "max_grad_norm": 1.0}}
    private_sgd = plan(privacy={"mode": "open", "dp": dp})
    assert private_sgd.training["dp_noise_multiplier"] == 1.0
    assert plan(strategy={"name": "scaffold"}).training["algorithm"] == "scaffold"
    assert len({plan().hash, prox.hash, private_sgd.hash}) == 3
    # the fedprox plan's own config passes; without prox_mu it is refused
    fit = {**prox.training, "seed": 2}
    assert isinstance(
        check_task_plan(task(task_plan=prox.to_task_plan(), config=fit)), TrainingPlan
    )
    del fit["prox_mu"]
    refusal = check_task_plan(task(task_plan=prox.to_task_plan(), config=fit))
    assert isinstance(refusal, Refusal) and "prox_mu missing (plan: 0.1)" in refusal.message


def test_secure_aggregation_stage_fields_may_vary() -> None:
    config = {**plan().training, "seed": 5, "secagg_stage": "mask", "secagg_header": "{}"}
    secure = plan(privacy={"mode": "secure"})
    pipeline = site_pipeline_for(secure)
    t = replace(task(task_plan=secure.to_task_plan(), config=config), pipeline=pipeline)
    assert isinstance(check_task_plan(t), TrainingPlan)


def test_an_incomplete_plan_is_invalid() -> None:
    bad = {k: v for k, v in plan().to_task_plan().items() if k != "code"}
    refusal = check_task_plan(task(task_plan=bad))
    assert isinstance(refusal, Refusal) and refusal.kind == "plan-invalid"
    assert "code" in refusal.message
    with pytest.raises(ConfigError, match="unknown"):
        model_code_files("nope")
