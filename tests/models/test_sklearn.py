"""The scikit-learn SGDClassifier adapter: same params and same result as the numpy model."""

from __future__ import annotations

import numpy as np
import pytest

from fedcare.data.base import Dataset
from fedcare.errors import ModelError
from fedcare.models.base import LocalTrainSpec
from fedcare.models.logistic import LogisticRegression
from fedcare.models.sklearn import SklearnLogistic
from fedcare.records.arrays import ArrayRecord

MODEL = SklearnLogistic()


def start(d: int = 5) -> ArrayRecord:
    return ArrayRecord({"weight": np.linspace(-0.2, 0.2, d), "bias": np.float64(0.1)})


@pytest.mark.parametrize(
    "spec",
    [
        LocalTrainSpec(epochs=3, lr=0.05, l2=0.01),
        LocalTrainSpec(epochs=1, max_steps=250, lr=0.1),
    ],
)
def test_equals_numpy_logistic_with_batch_size_one(
    binary_data: Dataset, spec: LocalTrainSpec
) -> None:
    # Same permutations from the same rng, same per-sample update: the same parameters.
    ours = MODEL.fit(start(), binary_data, spec, np.random.default_rng(4))
    numpy_spec = LocalTrainSpec(
        epochs=spec.epochs, max_steps=spec.max_steps, lr=spec.lr, l2=spec.l2, batch_size=1
    )
    reference = LogisticRegression().fit(start(), binary_data, numpy_spec, np.random.default_rng(4))
    np.testing.assert_allclose(ours.params.flatten(), reference.params.flatten(), atol=1e-12)
    assert ours.num_steps == reference.num_steps
    assert ours.metrics["train_loss"] == pytest.approx(reference.metrics["train_loss"])


def test_params_are_interchangeable_with_the_numpy_model(binary_data: Dataset) -> None:
    p = MODEL.init_params((5,), np.random.default_rng(0))
    assert p == LogisticRegression().init_params((5,), np.random.default_rng(0))
    trained = MODEL.fit(p, binary_data, LocalTrainSpec(), np.random.default_rng(0)).params
    assert trained.shapes == {"weight": (5,), "bias": ()} and trained["weight"].dtype == np.float64
    np.testing.assert_allclose(
        MODEL.predict(trained, binary_data.X), LogisticRegression().predict(trained, binary_data.X)
    )


def test_num_steps_counts_samples_and_ignores_batch_size(binary_data: Dataset) -> None:
    spec = LocalTrainSpec(epochs=2, batch_size=32)
    assert MODEL.fit(start(), binary_data, spec, np.random.default_rng(0)).num_steps == 240
    spec = LocalTrainSpec(max_steps=130, batch_size=32)
    assert MODEL.fit(start(), binary_data, spec, np.random.default_rng(0)).num_steps == 130


def test_deterministic_for_a_seed(binary_data: Dataset) -> None:
    spec = LocalTrainSpec(epochs=2)
    runs = [
        MODEL.fit(start(), binary_data, spec, np.random.default_rng(s)).params for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_a_site_with_one_class_still_trains(binary_data: Dataset) -> None:
    ones = Dataset(X=binary_data.X[:20], y=np.ones(20, dtype=np.int64))
    result = MODEL.fit(start(), ones, LocalTrainSpec(epochs=5), np.random.default_rng(0))
    assert result.params["bias"] > start()["bias"]


@pytest.mark.parametrize(
    ("spec", "what"),
    [
        (LocalTrainSpec(prox_mu=0.1), "FedProx proximal term"),
        (LocalTrainSpec(correction=start()), "SCAFFOLD correction"),
        (LocalTrainSpec(optimizer="adam"), "optimizer 'adam'"),
        (LocalTrainSpec(momentum=0.9), "momentum=0.9"),
    ],
)
def test_unsupported_training_is_refused(
    binary_data: Dataset, spec: LocalTrainSpec, what: str
) -> None:
    with pytest.raises(ModelError, match=f"SGDClassifier cannot train with .*{what}"):
        MODEL.fit(start(), binary_data, spec, np.random.default_rng(0))


def test_fit_does_not_mutate_inputs(binary_data: Dataset) -> None:
    X, y, p = binary_data.X.copy(), binary_data.y.copy(), start()
    MODEL.fit(p, binary_data, LocalTrainSpec(epochs=2, l2=0.1), np.random.default_rng(0))
    assert p == start()
    np.testing.assert_array_equal(binary_data.X, X)
    np.testing.assert_array_equal(binary_data.y, y)


def test_validation_messages(binary_data: Dataset) -> None:
    with pytest.raises(ModelError, match=r"SGDClassifier params array 'weight' has shape \(3,\)"):
        MODEL.fit(start(3), binary_data, LocalTrainSpec(), np.random.default_rng(0))
    X = binary_data.X.copy()
    X[5] = np.inf
    with pytest.raises(ModelError, match="X contains inf values in 1 of 120 rows"):
        MODEL.predict(start(), X)
