"""What a dataset is to fedcare: per-site train and test splits of arrays.

A :class:`FederatedDataset` is the natural split of a real multi-site dataset (or a seeded
partition of a centralised one). Each :class:`SiteData` holds only that site's rows; in a real
deployment each lives behind its own firewall, and only the site agent reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedcare.errors import DataError
from fedcare.records.tasks import TaskType

__all__ = ["Dataset", "FederatedDataset", "SiteData", "TaskType"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Rows of one split at one site.

    Attributes
    ----------
    X:
        Features, shape ``(n, ...)``: ``(n, d)`` float for tabular data, ``(n, c, h, w)`` for
        images. Missing values are ``NaN`` (the site's preprocessing imputes them).
    y:
        Shape ``(n,)``: the 0/1 label for binary tasks, the class index for multiclass, the
        target for regression, the event indicator for survival; shape ``(n, L)`` of 0/1 for
        multilabel tasks (see :mod:`fedcare.records.tasks`).
    time:
        Shape ``(n,)`` survival times for survival tasks, else ``None``.
    """

    X: np.ndarray
    y: np.ndarray
    time: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.X)
        shape = np.shape(self.y)
        if len(shape) not in (1, 2) or shape[0] != n:
            raise DataError(f"y has shape {shape}, expected ({n},) or ({n}, L) to match X")
        if self.time is not None and np.shape(self.time) != (n,):
            raise DataError(f"time has shape {np.shape(self.time)}, expected ({n},) to match X")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    def take(self, index: np.ndarray) -> Dataset:
        """The rows at ``index`` (a copy)."""
        return Dataset(
            X=self.X[index],
            y=self.y[index],
            time=None if self.time is None else self.time[index],
        )

    def with_features(self, X: np.ndarray) -> Dataset:
        """The same rows with new features (e.g. after preprocessing)."""
        return Dataset(X=X, y=self.y, time=self.time)

    @staticmethod
    def concat(parts: Sequence[Dataset]) -> Dataset:
        if not parts:
            raise DataError("cannot concatenate an empty list of datasets")
        times = [p.time for p in parts]
        if any(t is None for t in times) and not all(t is None for t in times):
            raise DataError("cannot concatenate survival and non-survival datasets")
        return Dataset(
            X=np.concatenate([p.X for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            time=None if times[0] is None else np.concatenate(times),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, eq=False)
class SiteData:
    """One site's rows: a train split and a test split."""

    site_id: str
    train: Dataset
    test: Dataset


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """A dataset split over sites, with what a report needs to describe it."""

    name: str
    task: TaskType
    sites: tuple[SiteData, ...]
    feature_names: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("accuracy", "auroc")
    description: str = ""
    citation: str = ""
    license: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [s.site_id for s in self.sites]
        if len(set(ids)) != len(ids):
            raise DataError(f"dataset {self.name!r} has duplicate site ids: {ids}")
        if not ids:
            raise DataError(f"dataset {self.name!r} has no sites")

    @property
    def site_ids(self) -> list[str]:
        return [s.site_id for s in self.sites]

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def site(self, site_id: str) -> SiteData:
        for s in self.sites:
            if s.site_id == site_id:
                return s
        raise DataError(f"dataset {self.name!r} has no site {site_id!r}; sites: {self.site_ids}")

    def pooled(self, site_id: str = "pooled") -> SiteData:
        """All sites' rows in one place: only for the pooled baseline in simulation."""
        return SiteData(
            site_id=site_id,
            train=Dataset.concat([s.train for s in self.sites]),
            test=Dataset.concat([s.test for s in self.sites]),
        )
