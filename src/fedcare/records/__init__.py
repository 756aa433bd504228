"""Records: named arrays, metrics, configs and the messages that carry them.

The names load on first use (module ``__getattr__``), so that importing one light module of
this package (``fedcare.records.messages``, as the coordinator's store does) does not import
numpy through :mod:`fedcare.records.arrays`.
"""

import typing

if typing.TYPE_CHECKING:  # the real types for mypy; at run time these load lazily
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


def __getattr__(name: str) -> object:
    if name in __all__:
        import importlib

        module = "fedcare.records.arrays" if name == "ArrayRecord" else "fedcare.records.messages"
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'fedcare.records' has no attribute {name!r}")
