"""Records: named arrays, metrics, configs and the messages that carry them."""

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import (
    MESSAGE_VERSION,
    ConfigRecord,
    MetricRecord,
    Reply,
    ReplyError,
    Scalar,
    Task,
    TaskKind,
)

__all__ = [
    "MESSAGE_VERSION",
    "ArrayRecord",
    "ConfigRecord",
    "MetricRecord",
    "Reply",
    "ReplyError",
    "Scalar",
    "Task",
    "TaskKind",
]
