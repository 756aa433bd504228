import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ValidationError
from fedcare.evaluation.membership import (
    loss_threshold_auroc,
    membership_audit,
    per_example_loss,
)
from fedcare.models.base import LocalTrainSpec
from fedcare.models.logistic import LogisticRegression
from fedcare.privacy.dp_sgd import DpSgdSpec
from fedcare.records.arrays import ArrayRecord

MODEL = LogisticRegression()


def noisy_rows(n: int, d: int, seed: int) -> Dataset:
    """Many features, few rows, labels mostly noise: an unregularized model memorizes."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = ((X[:, 0] + 2.0 * rng.normal(size=n)) > 0).astype(np.float64)
    return Dataset(X=X, y=y)


def trainer(spec: LocalTrainSpec):  # type: ignore[no-untyped-def]
    def train(rows: Dataset, rng: np.random.Generator) -> ArrayRecord:
        init = MODEL.init_params(rows.input_shape, np.random.default_rng(0))
        return MODEL.fit(init, rows, spec, rng).params

    return train


def audit(spec: LocalTrainSpec, seed: int) -> tuple[float, float]:
    train_rows, test_rows = noisy_rows(60, 40, seed), noisy_rows(120, 40, seed + 100)
    params = trainer(spec)(train_rows, np.random.default_rng(seed))
    result = membership_audit(
        MODEL, params, train_rows, test_rows, trainer(spec), np.random.default_rng(seed)
    )
    assert result.num_members == result.num_nonmembers == 60
    return result.loss_threshold_auroc, result.shadow_auroc


def test_overfit_model_leaks_membership() -> None:
    spec = LocalTrainSpec(epochs=300, lr=0.5)
    loss_auc, shadow_auc = audit(spec, 1)
    assert loss_auc > 0.75
    assert shadow_auc > 0.7


def test_dp_model_is_near_chance() -> None:
    # DP-SGD with a small clip and noise multiplier 4: both attacks within 0.15 of 0.5.
    dp = DpSgdSpec(max_grad_norm=0.1, delta=1e-5, noise_multiplier=4.0)
    spec = LocalTrainSpec(epochs=30, batch_size=10, lr=0.5, dp=dp)
    loss_auc, shadow_auc = audit(spec, 2)
    assert abs(loss_auc - 0.5) < 0.15
    assert abs(shadow_auc - 0.5) < 0.15


def test_loss_threshold_orders_by_loss() -> None:
    assert loss_threshold_auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert loss_threshold_auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    with pytest.raises(ValidationError, match="members and non-members"):
        loss_threshold_auroc(np.array([]), np.array([0.1]))


def test_per_example_loss_is_bce() -> None:
    loss = per_example_loss(np.array([0.9, 0.9]), np.array([1, 0]))
    np.testing.assert_allclose(loss, [-np.log(0.9), -np.log(0.1)])


def test_report_shows_the_attack_aurocs() -> None:
    from fedcare.evaluation.report import render_report

    per_site = {"a": {"loss_threshold_auroc": 0.61, "shadow_auroc": 0.58}}
    results = {
        "membership_inference": {
            "per_site": {"a": {**per_site["a"], "num_members": 10.0, "num_nonmembers": 10.0}},
            "loss_threshold_auroc": 0.61,
            "shadow_auroc": 0.58,
        }
    }
    html = render_report(results)
    section = html[html.index('id="membership-inference"') :]
    assert "<td>a</td><td>0.610</td>" in section
    assert "0.580" in section
    assert 'id="membership-inference"' not in render_report({})
