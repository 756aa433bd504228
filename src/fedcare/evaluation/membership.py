"""Membership-inference attacks: how well can an attacker tell training rows from others?

Both attacks run where the rows are (at a site, or in a simulation on public data) and
report only an AUROC: 0.5 means members and non-members are indistinguishable, 1.0 that the
model gives every training row away.

* **Loss threshold** (Yeom et al. 2018): a row is called a member when the model's loss on
  it is low; the AUROC of ``-loss`` over members (label 1) and non-members (label 0).
* **Shadow models** (Shokri et al. 2017): the attacker trains ``num_shadows`` models like the
  target on data disjoint from the target's training set, each on a random half of a shadow
  pool, labels the pool's rows by whether that shadow saw them, and fits an attack classifier
  (logistic regression on the log-odds of the true-label probability and the label) that
  it then applies to the target model's outputs.

:func:`membership_audit` is the site-side entry point: members are the site's training rows,
non-members half of its test rows, and the other half of the test rows is the shadow pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from fedcare.data.base import Dataset
from fedcare.errors import ValidationError
from fedcare.evaluation.metrics import auroc
from fedcare.models.base import ModelAdapter
from fedcare.records.arrays import ArrayRecord

__all__ = [
    "MembershipResult",
    "TrainFn",
    "attack_features",
    "loss_attack_auroc",
    "loss_threshold_auroc",
    "membership_audit",
    "per_example_loss",
    "shadow_attack_auroc",
]

#: ``(rows, rng) -> params``: trains a model like the target's on ``rows``.
TrainFn = Callable[[Dataset, np.random.Generator], ArrayRecord]

_EPS = 1e-7


@dataclass(frozen=True)
class MembershipResult:
    """Attack AUROCs at one site and the row counts they rest on."""

    loss_threshold_auroc: float
    shadow_auroc: float
    num_members: int
    num_nonmembers: int

    def to_dict(self) -> dict[str, float]:
        return {
            "loss_threshold_auroc": self.loss_threshold_auroc,
            "shadow_auroc": self.shadow_auroc,
            "num_members": float(self.num_members),
            "num_nonmembers": float(self.num_nonmembers),
        }


def _true_label_prob(prob: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    return np.where(np.asarray(y) == 1, p, 1 - p)


def per_example_loss(prob: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each row, from ``P(y=1)`` and 0/1 labels."""
    return -np.log(_true_label_prob(prob, y))


def loss_threshold_auroc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUROC of the loss-threshold attack (low loss -> member).

    Raises
    ------
    ValidationError
        If either group is empty.
    """
    m, n = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    if not len(m) or not len(n):
        raise ValidationError(
            f"membership attack needs members and non-members, got {len(m)}, {len(n)}"
        )
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
    return auroc(labels, -np.r_[m, n])


def attack_features(prob: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The attack classifier's inputs: log-odds of the true label's probability, the label."""
    p = _true_label_prob(prob, y)
    logit = np.log(p) - np.log1p(-p)
    yy = np.asarray(y, dtype=np.float64)
    return np.column_stack([logit, yy, logit * yy])


def shadow_attack_auroc(
    predict: Callable[[ArrayRecord, np.ndarray], np.ndarray],
    train: TrainFn,
    target_params: ArrayRecord,
    members: Dataset,
    nonmembers: Dataset,
    shadow_pool: Dataset,
    rng: np.random.Generator,
    *,
    num_shadows: int = 4,
) -> float:
    """AUROC of a shadow-model attack on ``target_params`` (see module docstring).

    ``predict(params, X) -> P(y=1)``; ``shadow_pool`` must be disjoint from the target's
    training rows. Raises :class:`ValidationError` for fewer than 4 pool rows.
    """
    if len(shadow_pool) < 4 or num_shadows < 1:
        raise ValidationError(
            f"shadow attack needs >= 4 pool rows and >= 1 shadow, got {len(shadow_pool)} rows, "
            f"{num_shadows} shadows"
        )
    feats, labels = [], []
    for _ in range(num_shadows):
        inside = rng.permutation(len(shadow_pool)) < len(shadow_pool) // 2
        params = train(shadow_pool.take(np.flatnonzero(inside)), rng)
        prob = predict(params, shadow_pool.X)
        feats.append(attack_features(prob, shadow_pool.y))
        labels.append(inside.astype(np.float64))
    y_attack = np.concatenate(labels)
    attack = LogisticRegression(C=1.0).fit(np.vstack(feats), y_attack)
    scores = [
        attack.decision_function(attack_features(predict(target_params, d.X), d.y))
        for d in (members, nonmembers)
    ]
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return auroc(truth, np.concatenate(scores))


def loss_attack_auroc(
    adapter: ModelAdapter,
    params: ArrayRecord,
    train_rows: Dataset,
    test_rows: Dataset,
    rng: np.random.Generator,
) -> float:
    """The loss-threshold attack at one site: a random subset of its training rows (members),
    as many as its test rows (non-members), scored by the model's per-example loss.

    This is the attack a site runs on the final model of a deployed study (it needs no shadow
    models); only the AUROC leaves the site.
    """
    chosen = rng.permutation(len(train_rows))[: max(1, min(len(train_rows), len(test_rows)))]
    members = train_rows.take(chosen)
    losses = [per_example_loss(adapter.predict(params, d.X), d.y) for d in (members, test_rows)]
    return loss_threshold_auroc(*losses)


def membership_audit(
    adapter: ModelAdapter,
    params: ArrayRecord,
    train_rows: Dataset,
    test_rows: Dataset,
    train: TrainFn,
    rng: np.random.Generator,
    *,
    num_shadows: int = 4,
) -> MembershipResult:
    """Both attacks against ``params`` at one site (binary task), as the module describes.

    Members are a random subset of ``train_rows`` as large as the non-member half of
    ``test_rows``, so the AUROCs compare balanced groups.
    """
    if adapter.task != "binary":
        raise ValidationError(f"membership attacks support binary models, not {adapter.task!r}")
    order = rng.permutation(len(test_rows))
    half = len(order) // 2
    nonmembers, pool = test_rows.take(order[:half]), test_rows.take(order[half:])
    chosen = rng.permutation(len(train_rows))[: max(1, min(len(train_rows), half))]
    members = train_rows.take(chosen)
    losses = [per_example_loss(adapter.predict(params, d.X), d.y) for d in (members, nonmembers)]
    shadow = shadow_attack_auroc(
        adapter.predict, train, params, members, nonmembers, pool, rng, num_shadows=num_shadows
    )
    return MembershipResult(
        loss_threshold_auroc=loss_threshold_auroc(*losses),
        shadow_auroc=shadow,
        num_members=len(members),
        num_nonmembers=len(nonmembers),
    )
