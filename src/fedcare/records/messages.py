"""Tasks the coordinator sends to sites and the replies sites send back.

A :class:`Task` carries everything a site needs for one step of one round: the global
parameters, a flat config of scalars, extra named arrays (e.g. SCAFFOLD's server control
variate), the study's training plan and the versioned spec of the client half of the
aggregation pipeline. A :class:`Reply` carries only what may leave a site: named arrays
(an update, never data rows), a sample count and scalar metrics, or an error with a reason, plus
``info``: short strings for provenance (dataset fingerprint, plan hash, approval id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from fedcare.errors import ValidationError

if TYPE_CHECKING:
    from fedcare.records.arrays import ArrayRecord


__all__ = [
    "MESSAGE_VERSION",
    "ConfigRecord",
    "MetricRecord",
    "Reply",
    "ReplyError",
    "Scalar",
    "Task",
    "TaskKind",
    "split_task_key",
    "task_key",
]


def _no_arrays() -> ArrayRecord:
    # numpy loads with the first record, not with this module (the coordinator's store and
    # status commands import it only for ReplyError).
    from fedcare.records.arrays import ArrayRecord

    return ArrayRecord()


MESSAGE_VERSION = 1

Scalar = bool | int | float | str
ConfigRecord = Mapping[str, Scalar]
MetricRecord = Mapping[str, float]
TaskKind = Literal["fit", "evaluate", "stats", "analytics", "secagg", "deploy"]
TASK_KINDS: tuple[str, ...] = ("fit", "evaluate", "stats", "analytics", "secagg", "deploy")


def _check_scalars(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if not isinstance(k, str):
            raise ValidationError(f"{what} keys must be strings, got {k!r}")
        if not isinstance(v, bool | int | float | str):
            raise ValidationError(f"{what}[{k!r}] must be a bool, int, float or str, got {v!r}")
        out[k] = v
    return out


def task_key(study_id: str, round: int, kind: str, site_id: str, submission: int = 0) -> str:
    """The id a task goes by between the coordinator and its site (``Task.task_id``):
    ``study/round/kind/site``, with ``#n`` after it for a task of submission number ``n``
    (a site sent the same round and kind again, as FedBuff sends a model version again)."""
    key = f"{study_id}/{round}/{kind}/{site_id}"
    return f"{key}#{submission}" if submission else key


def split_task_key(key: str) -> tuple[str, int, str, str, int] | None:
    """``(study_id, round, kind, site_id, submission)`` of a task key, or None if it is not
    one (site ids hold no ``#``; no suffix is submission 0)."""
    head, sep, number = key.partition("#")
    parts = head.rsplit("/", 3)
    if len(parts) != 4 or not all(parts) or not parts[1].isdigit() or len(key) > 512:
        return None
    if sep and not (number.isascii() and number.isdigit() and int(number) > 0):
        return None
    return parts[0], int(parts[1]), parts[2], parts[3], int(number) if sep else 0


def _check_submission(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ValidationError(f"submission must be an int in [0, 2**32), got {value!r}")


@dataclass(frozen=True)
class Task:
    """One instruction for one site in one round."""

    study_id: str
    round: int
    site_id: str
    kind: TaskKind
    params: ArrayRecord = field(default_factory=_no_arrays)
    config: ConfigRecord = field(default_factory=dict)
    arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)
    pipeline: Mapping[str, Any] = field(default_factory=dict)
    version: int = MESSAGE_VERSION
    #: The coordinator's number for a task sent again with the same study, round, kind and
    #: site (0: the first); it makes :attr:`task_id` name this one (:func:`task_key`).
    submission: int = 0

    def __post_init__(self) -> None:
        _check_submission(self.submission)
        if self.kind not in TASK_KINDS:
            raise ValidationError(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if not isinstance(self.round, int) or self.round < 0:
            raise ValidationError(f"task round must be a non-negative int, got {self.round!r}")
        if not self.site_id:
            raise ValidationError("task site_id must be a non-empty string")
        object.__setattr__(self, "config", _check_scalars(self.config, "task config"))

    @property
    def task_id(self) -> str:
        return task_key(self.study_id, self.round, self.kind, self.site_id, self.submission)


@dataclass(frozen=True)
class ReplyError:
    """Why a site did not carry out a task. ``kind`` is a short machine-readable reason."""

    kind: str
    message: str


@dataclass(frozen=True)
class Reply:
    """What a site sends back for a task: arrays, a sample count and metrics, or an error."""

    study_id: str
    round: int
    site_id: str
    kind: TaskKind
    arrays: ArrayRecord = field(default_factory=_no_arrays)
    num_samples: int = 0
    metrics: MetricRecord = field(default_factory=dict)
    error: ReplyError | None = None
    version: int = MESSAGE_VERSION
    info: Mapping[str, str] = field(default_factory=dict)
    #: The ``submission`` of the task it answers (:attr:`Task.submission`).
    submission: int = 0

    def __post_init__(self) -> None:
        _check_submission(self.submission)
        if not isinstance(self.num_samples, int) or self.num_samples < 0:
            raise ValidationError(
                f"reply from site {self.site_id!r} has num_samples={self.num_samples!r}; "
                "expected a non-negative int"
            )
        metrics = {}
        for k, v in self.metrics.items():
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise ValidationError(
                    f"reply from site {self.site_id!r}: metric {k!r} must be a number, got {v!r}"
                )
            metrics[k] = float(v)
        object.__setattr__(self, "metrics", metrics)
        for key, text in self.info.items():
            if not isinstance(key, str) or not isinstance(text, str):
                raise ValidationError(
                    f"reply from site {self.site_id!r}: info {key!r} must map a string to a "
                    f"string, got {text!r}"
                )
        object.__setattr__(self, "info", dict(self.info))

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def task_id(self) -> str:
        """The id of the task this reply answers (:attr:`Task.task_id`)."""
        return task_key(self.study_id, self.round, self.kind, self.site_id, self.submission)

    def answering(self, task: Task) -> Reply:
        """This reply, naming ``task``'s submission (a site's handler need not know it)."""
        if self.submission == task.submission:
            return self
        return replace(self, submission=task.submission)

    @classmethod
    def failure(cls, task: Task, kind: str, message: str) -> Reply:
        """The error reply to ``task``."""
        return cls(
            study_id=task.study_id,
            round=task.round,
            site_id=task.site_id,
            kind=task.kind,
            error=ReplyError(kind=kind, message=message),
            submission=task.submission,
        )

    def matches(self, task: Task) -> bool:
        """True when this reply answers ``task`` (same study, round, site and kind; the
        coordinator checks the ``submission`` by the task id a reply names)."""
        return (self.study_id, self.round, self.site_id, self.kind) == (
            task.study_id,
            task.round,
            task.site_id,
            task.kind,
        )
