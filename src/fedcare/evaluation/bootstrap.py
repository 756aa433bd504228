"""Vectorized bootstrap of the clinical metrics (pure numpy).

A bootstrap resample of ``n`` rows is represented by its *counts*: how often each row was drawn
(a row of a ``(B, n)`` matrix ``W``, each row summing to ``n``). Every metric here is written as
a function of such weights, so ``B`` resamples cost a few matrix-vector products instead of
``B`` calls of the metric: 200 resamples of 10,000 rows of a binary task take about 0.1 s.
With ``W`` all ones each function returns the metric on the rows themselves (the tests check
this against :mod:`fedcare.evaluation.metrics`, :mod:`fedcare.evaluation.task_metrics` and
scikit-learn).

A metric undefined in a resample (AUROC of a resample without a positive row, say) is ``NaN``
there; :func:`percentile_interval` skips those resamples and returns no interval when fewer
than half of them remain.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "MIN_VALID_FRACTION",
    "binary_weighted",
    "bootstrap",
    "multiclass_weighted",
    "multilabel_weighted",
    "percentile_interval",
    "regression_weighted",
    "resample_counts",
    "survival_weighted",
    "weighted_auroc",
]

#: An interval needs at least this share of the resamples to have the metric defined.
MIN_VALID_FRACTION = 0.5

# Largest number of (resample, row) cells held at once; bounds memory to a few dozen MB.
_CELLS = 4_000_000
# Largest pair block of the weighted C-index (event rows x rows).
_PAIR_CELLS = 2_000_000

Metrics = dict[str, np.ndarray]


def resample_counts(n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """``(b, n)`` float counts: row ``i`` of resample ``r`` was drawn ``W[r, i]`` times (rows
    drawn uniformly with replacement, ``n`` draws per resample)."""
    idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(float)


def bootstrap(
    n: int, b: int, rng: np.random.Generator, metrics: Callable[[np.ndarray], Metrics]
) -> Metrics:
    """``metrics(W)`` over ``b`` resamples of ``n`` rows, in chunks of resamples that keep
    memory bounded; each value of the result has shape ``(b,)``."""
    chunk = max(1, _CELLS // max(n, 1))
    parts: list[Metrics] = []
    for start in range(0, b, chunk):
        parts.append(metrics(resample_counts(n, min(chunk, b - start), rng)))
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The percentile interval of the defined (finite) resample values, or ``None`` when fewer
    than :data:`MIN_VALID_FRACTION` of them (or fewer than 2) are defined."""
    ok = values[np.isfinite(values)]
    if ok.size < max(2, int(np.ceil(MIN_VALID_FRACTION * values.size))):
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ok, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_auroc(pos: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC (Mann–Whitney, ties count 1/2) of each weighted resample: ``pos`` ``(n,)`` bool,
    ``score`` ``(n,)``, ``w`` ``(B, n)``; ``(B,)``, ``NaN`` where a class has no weight."""
    if score.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ws = w[:, order]
    p = pos[order]
    gp = np.add.reduceat(ws * p, starts, axis=1)
    gn = np.add.reduceat(ws * ~p, starts, axis=1)
    below = np.cumsum(gn, axis=1) - gn
    num = np.sum(gp * (below + 0.5 * gn), axis=1)
    return _ratio(num, gp.sum(axis=1) * gn.sum(axis=1))


def binary_weighted(
    y: np.ndarray, p: np.ndarray, threshold: float, eps: float = 1e-15
) -> Callable[[np.ndarray], Metrics]:
    """The binary metrics (accuracy, sensitivity, specificity, PPV, NPV, Brier, log loss, AUROC)
    as a function of the weights; ``y`` 0/1, ``p`` probabilities of class 1."""
    pos = y == 1
    pred = p >= threshold
    sq = (p - y) ** 2
    q = np.clip(p, eps, 1.0 - eps)
    ll = -np.where(pos, np.log(q), np.log1p(-q))
    cols = np.stack([pos & pred, ~pos & pred, pos, sq, ll], axis=1).astype(float)

    def metrics(w: np.ndarray) -> Metrics:
        tp, fp, npos, sq_sum, ll_sum = (w @ cols).T
        total = w.sum(axis=1)
        nneg = total - npos
        tn = nneg - fp
        fn = npos - tp
        return {
            "accuracy": _ratio(tp + tn, total),
            "auroc": weighted_auroc(pos, p, w),
            "sensitivity": _ratio(tp, npos),
            "specificity": _ratio(tn, nneg),
            "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn),
            "brier": _ratio(sq_sum, total),
            "log_loss": _ratio(ll_sum, total),
        }

    return metrics


def _macro_auroc(
    truth: np.ndarray, p: np.ndarray, w: np.ndarray, *, multiclass: bool
) -> np.ndarray:
    if multiclass and p.shape[1] == 2:
        # two classes: scikit-learn (and task_metrics) use column 1 alone
        return weighted_auroc(truth[:, 1], p[:, 1], w)
    per = np.stack([weighted_auroc(truth[:, j], p[:, j], w) for j in range(p.shape[1])])
    defined = np.isfinite(per)
    count = defined.sum(axis=0)
    return _ratio(np.where(defined, per, 0.0).sum(axis=0), count.astype(float))


def _macro_f1(tp: np.ndarray, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Mean F1 over the classes present or predicted (``true + pred > 0``)."""
    used = (true + pred) > 0
    f1 = _ratio(2.0 * tp, true + pred)
    return _ratio(np.where(used, f1, 0.0).sum(axis=1), used.sum(axis=1).astype(float))


def multiclass_weighted(
    y: np.ndarray, prob: np.ndarray, eps: float = 1e-15
) -> Callable[[np.ndarray], Metrics]:
    """Multiclass metrics (accuracy, balanced accuracy, macro-F1, macro AUROC, log loss) of the
    argmax class; ``y`` class indices, ``prob`` ``(n, K)``."""
    k = prob.shape[1]
    classes = y.astype(np.int64)
    truth = classes[:, None] == np.arange(k)[None, :]
    predicted = np.argmax(prob, axis=1)[:, None] == np.arange(k)[None, :]
    correct = (truth & predicted).astype(float)
    picked = prob[np.arange(y.size), classes] if y.size else np.zeros(0)
    ll = -np.log(np.clip(picked, eps, 1.0))

    def metrics(w: np.ndarray) -> Metrics:
        total = w.sum(axis=1)
        tp = w @ correct
        true = w @ truth.astype(float)
        pred = w @ predicted.astype(float)
        present = true > 0
        recall = np.where(present, _ratio(tp, true), 0.0).sum(axis=1)
        return {
            "accuracy": _ratio(tp.sum(axis=1), total),
            "balanced_accuracy": _ratio(recall, present.sum(axis=1).astype(float)),
            "macro_f1": _macro_f1(tp, true, pred),
            "macro_auroc": _macro_auroc(truth, prob, w, multiclass=True),
            "log_loss": _ratio(w @ ll, total),
        }

    return metrics


def multilabel_weighted(
    y: np.ndarray, prob: np.ndarray, threshold: float = 0.5
) -> Callable[[np.ndarray], Metrics]:
    """Multilabel metrics (subset and Hamming accuracy, macro-F1, macro AUROC) at
    ``threshold``; ``y`` and ``prob`` ``(n, L)``."""
    truth = y == 1
    predicted = prob >= threshold
    right = predicted == truth
    rows = np.stack([right.all(axis=1), right.mean(axis=1)], axis=1).astype(float)

    def metrics(w: np.ndarray) -> Metrics:
        total = w.sum(axis=1)
        subset, hamming = (w @ rows).T
        tp = w @ (truth & predicted).astype(float)
        return {
            "subset_accuracy": _ratio(subset, total),
            "hamming_accuracy": _ratio(hamming, total),
            "macro_f1": _macro_f1(tp, w @ truth.astype(float), w @ predicted.astype(float)),
            "macro_auroc": _macro_auroc(truth, prob, w, multiclass=False),
        }

    return metrics


def regression_weighted(y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], Metrics]:
    """MAE, RMSE and R² (``NaN`` for a constant ``y`` or under 2 rows)."""
    err = pred - y
    cols = np.stack([np.abs(err), err**2, y, y**2], axis=1)

    def metrics(w: np.ndarray) -> Metrics:
        total = w.sum(axis=1)
        abs_sum, sq_sum, y_sum, yy_sum = (w @ cols).T
        ss_tot = yy_sum - _ratio(y_sum**2, total)
        ss_tot = np.where(ss_tot > 1e-12 * np.maximum(yy_sum, 1e-300), ss_tot, np.nan)
        return {
            "mae": _ratio(abs_sum, total),
            "rmse": np.sqrt(_ratio(sq_sum, total)),
            "r2": np.where(total >= 2, 1.0 - sq_sum / ss_tot, np.nan),
        }

    return metrics


def survival_weighted(
    event: np.ndarray, time: np.ndarray, risk: np.ndarray
) -> Callable[[np.ndarray], Metrics]:
    """Harrell's C-index (the pair rule of :func:`fedcare.evaluation.metrics.cindex`) of each
    weighted resample. A row is never comparable with itself, so a pair of copies of rows
    ``i`` and ``j`` weighs ``W_i W_j``; ``O(B n_events n)`` work in bounded blocks."""
    observed = event == 1
    ev = np.flatnonzero(observed)
    censored = ~observed

    def metrics(w: np.ndarray) -> Metrics:
        conc = np.zeros(w.shape[0])
        pairs = np.zeros(w.shape[0])
        step = max(1, _PAIR_CELLS // max(time.size, 1))
        for start in range(0, ev.size, step):
            rows = ev[start : start + step]
            ti, ri = time[rows, None], risk[rows, None]
            comparable = (time[None, :] > ti) | ((time[None, :] == ti) & censored[None, :])
            score = comparable * ((ri > risk[None, :]) + 0.5 * (ri == risk[None, :])).astype(float)
            wi = w[:, rows]
            pairs += np.sum((wi @ comparable.astype(float)) * w, axis=1)
            conc += np.sum((wi @ score) * w, axis=1)
        return {"cindex": _ratio(conc, pairs)}

    return metrics
